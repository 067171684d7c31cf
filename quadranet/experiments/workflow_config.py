"""The workflow config (workflow/config/*.yaml): read and checked against its JSON schema, the schema's defaults
filled in, as Snakemake's `validate(config, schema)` does (jsonschema's documented recipe for defaults:
https://python-jsonschema.readthedocs.io/en/stable/faq/). The schemas ship with the package (`SCHEMAS`), so a
config can be checked without a checkout of the workflow."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Union

import yaml

SCHEMAS = Path(__file__).with_name("schemas")
CONFIG_SCHEMA = SCHEMAS / "config.schema.yaml"  # a workflow config
SHEET_SCHEMA = SCHEMAS / "backbones.schema.yaml"  # one row of the backbone sheet


@functools.lru_cache(maxsize=None)
def _validator(schema_path: Path):
    """A Draft 2020-12 validator of the schema at `schema_path` that fills in the `default` of each property it
    checks (in place) before checking it."""
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(schema_path.read_text())
    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        for name, subschema in properties.items():
            if "default" in subschema and isinstance(instance, dict):
                instance.setdefault(name, subschema["default"])
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": fill_defaults})(schema)


def schema_error(instance: dict, schema_path: Path) -> Optional[tuple[str, str]]:
    """Fill the defaults of `schema_path` into `instance` (in place) and check it: None when it conforms, else
    (the dotted path of the first bad key, or '' for the top level; jsonschema's message)."""
    error = next(_validator(schema_path).iter_errors(instance), None)
    if error is None:
        return None
    return ".".join(str(p) for p in error.absolute_path), error.message


def validate_workflow_config(config: dict, source: str = "workflow config") -> dict:
    """`config` with the schema's defaults filled in (in place); ValueError naming `source`, the bad key and what
    the schema expects when it does not conform."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(config).__name__}")
    error = schema_error(config, CONFIG_SCHEMA)
    if error is not None:
        key, message = error
        raise ValueError(f"{source}: {key or 'top level'}: {message} (schema: {CONFIG_SCHEMA.name})")
    return config


def load_workflow_config(path: Union[str, Path]) -> dict:
    """The validated workflow config in YAML file `path` (relative paths: to the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"workflow config {str(path)!r} does not exist (relative to {Path.cwd()}); "
                                f"expected a YAML file such as workflow/config/default.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"workflow config {str(path)!r} is not valid YAML: {e}") from None
    return validate_workflow_config(config, f"workflow config {str(path)!r}")
