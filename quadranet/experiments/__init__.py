"""The experiment design of the reproduction: which runs a workflow config asks for.

A workflow config (`load_workflow_config`, checked against schemas/config.schema.yaml) and the backbone sheet
(`read_sheet`) make the registry (`build_registry`): every training and detection run of E1-E4 and COCO under its
run id, and the manifest of their roles. The Snakemake workflow turns each run into a job; `quadranet plan`
projects what the runs will cost. Nothing here imports Snakemake.
"""
from .design import build_registry
from .registry import MANIFEST_COLUMNS, RUNS_DIR, Registry, run_dir
from .sheet import Sheet, read_sheet
from .workflow_config import CONFIG_SCHEMA, SHEET_SCHEMA, load_workflow_config, validate_workflow_config

__all__ = ["CONFIG_SCHEMA", "MANIFEST_COLUMNS", "RUNS_DIR", "Registry", "SHEET_SCHEMA", "Sheet", "build_registry",
           "load_workflow_config", "read_sheet", "run_dir", "validate_workflow_config"]
