"""Image classification on the shared run layer (`quadranet.run`): `build` (model and data of a run: scratch,
adapt, finetune, lora), `train` (the training loop), `evaluate` (a finished run's weights on other data),
`cli` (`quadranet train | eval | shift-sweep`)."""
