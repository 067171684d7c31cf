"""Image classification on the shared run layer (`quadranet.run`), module for module as `quadranet.detection`:
`config` (the run config), `data` (train and eval sets), `model` (scratch, adapt, finetune, lora), `train`
(`train`, `train_one_epoch`), `evaluate` (`evaluate`, `evaluate_run`: a finished run's weights on other data),
`cli` (`quadranet train | eval | shift-sweep`)."""
