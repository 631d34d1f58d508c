"""Experiment files for the tests, from one template: the raw experiment (what an experiment file
parses to) as a dict, its TOML text, and the file written.

The template is the tiny experiment most tests run: seed 0, split-digits in 2 tasks, an MLP with
one hidden layer of 16 units, 4 evaluation episodes with 1 adaptation step, finetune for 1 epoch.
A test names what differs; ``None`` leaves a key out (so the simulator's default applies)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

ONE_EPOCH = {"epochs": 1}


def split_digits(num_tasks: int = 2) -> dict:
    """The [scenario] table of split-digits in ``num_tasks`` tasks (its other keys default)."""
    return {"name": "split-digits", "num_tasks": num_tasks}


def experiment_raw(name: str | None, *, seeds: list[int] | None = [0], scenario: dict | None = split_digits(),
                   model: dict | None = {"hidden": [16]}, evaluation: dict | None = {"episodes": 4, "adapt_steps": 1},
                   strategies: dict | None = {"finetune": ONE_EPOCH}, sweep: dict | None = None, **more) -> dict:
    """The raw experiment: ``name`` and ``seeds``, then ``more``'s top-level values (``threads=1``),
    the [scenario], [model] and [evaluation] tables, ``more``'s tables (``logging={...}``), the
    strategies and last the sweep, in that order, without the keys given as ``None``. A fresh deep
    copy: a test may change it without changing the template or another test's experiment."""
    values = {key: value for key, value in more.items() if not isinstance(value, dict)}
    tables = {key: value for key, value in more.items() if isinstance(value, dict)}
    raw = {"name": name, "seeds": seeds, **values, "scenario": scenario, "model": model, "evaluation": evaluation,
           **tables, "strategies": strategies, "sweep": sweep}
    return copy.deepcopy({key: value for key, value in raw.items() if value is not None})


def toml_text(raw: dict) -> str:
    """``raw`` as the text of an experiment file that parses back to ``raw``: one ``key = value``
    line per value (top-level values first), one ``[table]`` per table, a table of tables (the
    strategies) as one ``[table.key]`` per member, tables inside tables inline. The lines read as
    written by hand (``lr = 0.1``, ``seeds = [0, 1]``, ``"strategies.finetune.lr" = [0.05, 0.1]``),
    so that a test may edit the text with ``str.replace``."""
    lines = [f"{_key(key)} = {_value(value)}" for key, value in raw.items() if not isinstance(value, dict)]
    for key, value in raw.items():
        if isinstance(value, dict):
            lines += _sections([key], value)
    return "\n".join(lines) + "\n"


def experiment_toml(name: str | None, **fields) -> str:
    """The TOML text of :func:`experiment_raw` ``(name, **fields)``."""
    return toml_text(experiment_raw(name, **fields))


def write_experiment(folder: Path, text: str, file: str = "exp.toml") -> Path:
    """``text`` (an experiment file's content) written to ``folder/file``; its path."""
    path = Path(folder) / file
    path.write_text(text)
    return path


def _sections(path: list[str], table: dict) -> list[str]:
    if table and all(isinstance(value, dict) for value in table.values()):
        return [line for key, value in table.items() for line in _sections([*path, key], value)]
    return ["", f"[{'.'.join(map(_key, path))}]", *(f"{_key(key)} = {_value(value)}" for key, value in table.items())]


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")   # TOML escapes DEL too


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)                       # 0.1, 1e+30, inf and nan are TOML as Python writes them
    if isinstance(value, (str, Path)):
        return _string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(key)} = {_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")
