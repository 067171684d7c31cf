"""Speed and memory of a first-order model and its quadratic variants, measured in one process (`quadranet bench`):
`speed` times train steps and inference in eager PyTorch, `runtimes` the exported model in deployment runtimes."""
