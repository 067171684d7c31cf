"""Deployment: a model or a finished run exported to ONNX or torch.export (LoRA merged, BatchNorm folded, the fused
kernels decomposed into standard ops), loaded back and checked against eager PyTorch (`quadranet export`).
The code is in `exporter`; its command line in `cli`."""
from .exporter import (FORMATS, INPUT, OUTPUT, ExportError, check_format, check_run, export, export_run,
                       fold_batchnorm, load, onnx_session, prepare, prune_quadratic, quadratic_shares, read_metadata,
                       run_model, trace)

__all__ = ["FORMATS", "INPUT", "OUTPUT", "ExportError", "check_format", "check_run", "export", "export_run",
           "fold_batchnorm", "load", "onnx_session", "prepare", "prune_quadratic", "quadratic_shares", "read_metadata",
           "run_model", "trace"]
