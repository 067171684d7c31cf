"""The backbone sheet (workflow/backbones.tsv): one row per backbone the experiments may use.

A tab-separated file: a header line naming the columns of schemas/backbones.schema.yaml, then one line per
backbone; blank lines and lines starting with '#' are skipped. Every row is checked against the schema, its name
must be unique and its arch / v1_arch must be timm models (the QuadraNet families register themselves with timm),
so that a bad row stops the workflow before any job runs. Every error names the line, the row and the column.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import yaml

from .workflow_config import SHEET_SCHEMA, schema_error

COLUMNS = tuple(yaml.safe_load(SHEET_SCHEMA.read_text())["required"])  # in the schema's (and the file's) order
ARCH_COLUMNS = ("arch", "v1_arch")


@dataclass(frozen=True)
class Sheet:
    """The rows of a backbone sheet: name -> {column: value} (all strings, '' when empty), in file order."""
    path: str
    rows: dict

    def __contains__(self, name) -> bool:
        return name in self.rows

    def __getitem__(self, name: str) -> dict:
        if name not in self.rows:
            raise ValueError(f"backbone {name!r} is not a row of {self.path}; rows: {list(self.rows)}")
        return self.rows[name]

    def column(self, column: str) -> dict:
        """name -> that row's value of `column`."""
        return {name: row[column] for name, row in self.rows.items()}


def read_sheet(path: Union[str, Path]) -> Sheet:
    """The checked sheet at `path` (relative paths: to the working directory); ValueError naming the line, row and
    column of the first bad cell."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone sheet {str(path)!r} does not exist (relative to {Path.cwd()}); expected "
                                f"a TSV file with the columns {list(COLUMNS)}, such as workflow/backbones.tsv")
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1)
             if line.strip() and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: no header line; expected the columns {list(COLUMNS)}, tab-separated")
    (header_line, header), *body = lines
    names = header.split("\t")
    _check_header(path, header_line, names)
    rows, line_of = {}, {}
    for n, line in body:
        cells = line.split("\t")
        row = dict(zip(names, cells))
        where = f"{path}: row {row.get('name', cells[0])!r} (line {n})"
        if len(cells) < len(names):
            raise ValueError(f"{where}, column {names[len(cells)]!r}: no cell; the line has {len(cells)} "
                             f"tab-separated cells, expected {len(names)} ({names})")
        if len(cells) > len(names):
            raise ValueError(f"{where}, column {names[-1]!r}: {len(cells) - len(names)} cell(s) after this last "
                             f"column; expected {len(names)} tab-separated cells ({names})")
        error = schema_error(row, SHEET_SCHEMA)
        if error is not None:
            column, message = error
            raise ValueError(f"{where}, column {column!r}: {message} (schema: {SHEET_SCHEMA.name})")
        if row["name"] in rows:
            raise ValueError(f"{where}, column 'name': {row['name']!r} repeats the name of line "
                             f"{line_of[row['name']]}; each backbone needs a name of its own")
        rows[row["name"]], line_of[row["name"]] = {c: row[c] for c in COLUMNS}, n
    _check_architectures(path, rows, line_of)
    return Sheet(str(path), rows)


def _check_header(path: Path, line: int, names: list) -> None:
    where = f"{path}: header (line {line})"
    for i, name in enumerate(names):
        if name not in COLUMNS:
            raise ValueError(f"{where}, column {name!r}: not a sheet column; expected the columns {list(COLUMNS)}")
        if name in names[:i]:
            raise ValueError(f"{where}, column {name!r}: named twice; expected each of {list(COLUMNS)} once")
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{where}, column {missing[0]!r}: missing; expected the columns {list(COLUMNS)}")


def _check_architectures(path: Path, rows: dict, line_of: dict) -> None:
    """Each arch and v1_arch is a timm model, or the row names the close matches."""
    import timm

    import quadranet.models  # noqa: F401  (registers quadranet_v1_* / quadranet_v2_* with timm)

    known = set(timm.list_models())
    for name, row in rows.items():
        for column in ARCH_COLUMNS:
            arch = row[column]
            if arch and arch not in known:
                close = difflib.get_close_matches(arch, known, n=3)
                raise ValueError(f"{path}: row {name!r} (line {line_of[name]}), column {column!r}: {arch!r} is not "
                                 "a timm model" + (f" (did you mean {', '.join(close)}?)" if close else "")
                                 + "; timm.list_models('*pattern*') lists them")
