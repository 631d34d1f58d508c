"""Experiment files (TOML): loading, overrides, validation with field paths, resolved form.

An experiment file holds one scenario, a model, evaluation settings, seeds and a table of
strategies keyed by a label (the label names the strategy in results; ``strategy = "name"``
picks the implementation and defaults to the label)::

    name = "quickstart"
    seeds = [0, 1, 2]
    device = "cpu"            # cpu | cuda | auto
    threads = 1               # torch CPU threads (results are bit-identical per thread count)

    [scenario]
    name = "split-digits"
    num_tasks = 5

    [model]
    name = "mlp"
    hidden = [100, 100]

    [evaluation]
    episodes = 20
    adapt_steps = 5

    [strategies.finetune]
    lr = 0.1

    [strategies.joint_reset]
    strategy = "joint"
    reset = true

Every problem raises :class:`ConfigError` naming the file and the field path, e.g.
``strategies.finetune.lr: must be > 0``.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

import scenarios
import strategies
from scenarios.base import ScenarioError
from scenarios.params import Params
from scenarios.data import resolve_data_root
from simulator.evaluator import EvalSettings
from simulator.loggers import LOGGERS, LoggingSettings, tensorboard_problem
from simulator.online import OnlineSettings


class ConfigError(ValueError):
    """A bad experiment file or override: ``str(err)`` is one paragraph for the user."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        details = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
        super().__init__(f"invalid experiment file {source}: {details}")


class LoggingParams(Params):
    """The ``[logging]`` table: what a run logs into ``logs/`` of its run directory (simulator.loggers)."""

    loggers: list[Literal[LOGGERS]] = Field(["csv"], description="csv (logs/<label>-seed<seed>.csv) and/or "
                                                                 "tensorboard (logs/tensorboard/; needs the "
                                                                 "tensorboard extra); [] logs nothing")
    every: int = Field(10, gt=0, description="iterations of a task (online: batches) between two logged "
                                             "per-iteration values")

    @field_validator("loggers")
    @classmethod
    def _once_each(cls, loggers: list[str]) -> list[str]:
        if len(set(loggers)) != len(loggers):
            raise ValueError(f"must not repeat a logger: {loggers}")
        return loggers


MAX_THREADS = 4096
"""Most torch CPU threads a run may ask for: each is an OS thread, and more threads than cores
only slow a run down, so a count beyond the largest machines' cores is a mistake."""

MAX_FILE_BYTES = 10 * 2**20
"""Largest experiment file read: experiments are a few kilobytes of TOML, so a larger file is
the wrong file (a dataset, a log), refused before it is read into memory."""


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment, or ``None``.

    The name becomes a folder (``reports/<name>``, ``reports/<name>-sweep``), so it must be a
    plain name: letters, digits, ``-``, ``_`` and ``.``, not starting with ``.`` (no path
    separators, no ``..``, no hidden folder), at most 200 characters.

    Example:
        >>> plain_name_problem("split-mnist_v2.1") is None
        True
        >>> plain_name_problem("../x").endswith("names the folder reports/<name>; got '../x'")
        True
    """
    if re.fullmatch(r"[\w-][\w.-]{0,199}", name) is not None:
        return None
    too_long = " (more than 200 characters)" if len(name) > 200 else ""
    return (f"must be a plain name (letters, digits, '-', '_' and '.', not starting with '.'), since it "
            f"names the folder reports/<name>; got {name!r}{too_long}")


class TopLevel(Params):
    name: str | None = Field(None, description="experiment name (default: the file's stem)")
    seeds: list[int] = Field([0], min_length=1, description="one run per seed and strategy")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="cpu, cuda, or auto (cuda when available)")
    threads: int = Field(1, description=f"torch CPU threads (1..{MAX_THREADS})")
    scenario: dict[str, Any] = Field(description="the stream: name plus its parameters")
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "mlp"}, description="backbone: name plus parameters")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="evaluation settings")
    online: dict[str, Any] = Field(default_factory=dict, description="online-loop settings (online streams only)")
    logging: dict[str, Any] = Field(default_factory=dict, description="what runs log: loggers, every")
    strategies: dict[str, dict[str, Any]] = Field(min_length=1, description="label -> strategy table")
    data_root: str | None = Field(None, min_length=1, description="folder of the data files (default: $LIFELONG_DATA, else ./data)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        problem = None if name is None else plain_name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, seeds: list[int]) -> list[int]:
        bad = [s for s in seeds if not 0 <= s < 2**32]
        if bad:  # numpy's global generator, seeded from the run's seed, takes 32-bit seeds only
            raise ValueError(f"every seed must be in 0..2**32-1 = 4294967295 (numpy seeds are 32-bit), "
                             f"got {bad[0]}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"must not repeat a seed: {seeds}")
        return seeds

    @field_validator("threads")
    @classmethod
    def _thread_count(cls, threads: int) -> int:
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"must be between 1 and {MAX_THREADS}, got {threads}: torch starts one OS thread per "
                             f"CPU thread, and more threads than cores only slow a run down (this machine has "
                             f"{os.cpu_count()})")
        return threads


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of an experiment, validated."""

    label: str
    name: str
    config: Any
    model_name: str
    model_params: Any
    model_path: str = "model"  # the table the model came from, for messages: model or strategies.<label>.model


@dataclass(frozen=True)
class Experiment:
    """A validated experiment. :meth:`resolved` is its complete JSON form (defaults filled in)."""

    name: str
    source: str
    seeds: tuple[int, ...]
    device: str
    threads: int
    scenario_name: str
    scenario_params: Any
    evaluation: EvalSettings
    strategies: tuple[StrategySpec, ...]
    online: OnlineSettings = OnlineSettings()
    logging: LoggingSettings = LoggingSettings()

    def resolved(self) -> dict[str, Any]:
        scenario = {"name": self.scenario_name, **self.scenario_params.model_dump()}
        version = scenarios.family(self.scenario_name).version
        if version > 1:  # absent at version 1, so that the experiments of other families keep their hash
            scenario["stream_version"] = version
        return {
            "name": self.name, "seeds": list(self.seeds), "device": self.device, "threads": self.threads,
            "scenario": scenario,
            "evaluation": self.evaluation.model_dump(),
            "online": self.online.model_dump(),
            "logging": {"loggers": list(self.logging.loggers), "every": self.logging.every},
            "strategies": {s.label: {"strategy": s.name, **s.config.model_dump(),
                                     "model": {"name": s.model_name, **s.model_params.model_dump()}}
                           for s in self.strategies},
        }


_MESSAGES = {
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "missing": lambda e: "required",
    "int_type": lambda e: f"must be an integer, got {e['input']!r}",
    "float_type": lambda e: f"must be a number, got {e['input']!r}",
    "bool_type": lambda e: f"must be true or false, got {e['input']!r}",
    "string_type": lambda e: f"must be a string, got {e['input']!r}",
    "list_type": lambda e: f"must be a list, got {e['input']!r}",
    "dict_type": lambda e: f"must be a table, got {e['input']!r}",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}, got {e['input']!r}",
    "string_pattern_mismatch": lambda e: f"{e['input']!r} does not match {e['ctx']['pattern']}",
    "finite_number": lambda e: f"must be a finite number, got {e['input']!r}",
    "too_short": lambda e: ("must not be empty" if e["ctx"]["min_length"] == 1
                            else f"needs at least {e['ctx']['min_length']} items, got {e['ctx']['actual_length']}"),
    "too_long": lambda e: f"must have at most {e['ctx']['max_length']} items, got {e['ctx']['actual_length']}",
    "string_too_short": lambda e: ("must not be empty" if e["ctx"]["min_length"] == 1
                                   else f"must have at least {e['ctx']['min_length']} characters"),
}


def _union_member(model: type[Params], loc: tuple) -> bool:
    """Whether ``loc`` is inside one member of a union-typed field of ``model``: pydantic then
    puts the member's type name (``float``, ``list[float]``) after the field's name."""
    field = model.model_fields.get(loc[0]) if loc and isinstance(loc[0], str) else None
    if field is None or len(loc) < 2 or not isinstance(loc[1], str):
        return False
    members = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    return typing.get_origin(field.annotation) in (typing.Union, types.UnionType) and len(members) > 1


def _errors(err: ValidationError, model: type[Params]) -> list[dict[str, Any]]:
    """The errors of ``err``, with one per union-typed field: that of the member which matched
    furthest (``si_lambda = [inf]`` is a list whose item is not finite, not a bad float),
    its type name taken out of the location."""
    plain, unions = [], {}
    for e in err.errors():
        if not _union_member(model, e["loc"]):
            plain.append(e)
        elif e["loc"][0] not in unions or len(e["loc"]) > len(unions[e["loc"][0]]["loc"]):
            unions[e["loc"][0]] = e
    return plain + [{**e, "loc": (e["loc"][0], *e["loc"][2:])} for e in unions.values()]


def _problems(err: ValidationError, prefix: str, model: type[Params]) -> list[tuple[str, str]]:
    out = []
    for e in _errors(err, model):
        loc = [str(p) for p in e["loc"]]
        path = ".".join(([prefix] if prefix else []) + loc)
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (valid keys: {', '.join(model.model_fields) or 'none'})"
        elif e["type"] in _MESSAGES:
            msg = _MESSAGES[e["type"]](e)
        else:
            msg = e["msg"].removeprefix("Value error, ")
        out.append((path, msg))
    return out


def _validate(model: type[Params], data: dict[str, Any], prefix: str, problems: list) -> Any:
    try:
        return model(**data)
    except ValidationError as err:
        problems.extend(_problems(err, prefix, model))
        return None


def _lookup(registry, name: Any, path: str, problems: list):
    if not isinstance(name, str):
        problems.append((path, f"must be a string, got {name!r}"))
        return None
    try:
        return registry.get(name)
    except KeyError:
        problems.append((path, f"unknown {registry.what} {name!r} (valid: {', '.join(registry.names())}); "
                               f"one of your own is named 'package.module:name'"))
        return None
    except strategies.UserCodeError as err:  # a user's "package.module:name" that cannot serve
        problems.append((path, str(err)))
        return None


def _scenario_family(name: Any, problems: list):
    """A registered scenario family, or the family of a ``"package.module:function"`` user stream."""
    if isinstance(name, str) and ":" in name:
        try:
            return scenarios.family(name)
        except ScenarioError as err:
            problems.append(("scenario.name", str(err)))
            return None
    return _lookup(scenarios.FAMILIES, name, "scenario.name", problems)


def parse_value(text: str) -> Any:
    """A ``--set`` value read as a TOML value (``3``, ``0.1``, ``true``, ``[1, 2]``, ``"x"``);
    anything that is not valid TOML is taken as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(data: dict[str, Any], dotted: str, value: Any, source: str, origin: str = "--set") -> None:
    """Set ``data[a][b][c] = value`` for ``dotted = "a.b.c"``, creating tables as needed."""
    *parents, leaf = dotted.strip().split(".")
    node = data
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(source, [(".".join(parents[:i + 1]), f"is not a table; cannot {origin} inside it")])
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a copy of the raw TOML data."""
    data = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(source, [("--set", f"{item!r} is not of the form key.path=value")])
        set_path(data, key, parse_value(value.strip()), source)
    return data


def read_raw(path: str | Path) -> dict[str, Any]:
    """The TOML data of an experiment file; :class:`ConfigError` naming the file if it is
    missing, a directory or another non-regular file, unreadable, larger than
    :data:`MAX_FILE_BYTES`, not UTF-8 text, or not TOML."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [("", f"not a text file (byte {data[err.start]:#04x} at offset {err.start} "
                                           f"is not UTF-8); an experiment file is TOML text")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [("", f"not valid TOML: {err}")]) from None


def _read_bytes(path: Path) -> bytes:
    """The bytes of the regular file ``path``; :class:`ConfigError` saying why they cannot be had."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(str(path), [("", why)])

    try:
        if path.is_dir():
            raise refuse("is a directory, not an experiment file")
        if not path.exists():
            raise refuse(f"no such file (looked in {path.resolve().parent})")
        if not path.is_file():  # a device or a pipe could block or never end
            raise refuse("is not a regular file (a device, pipe or socket); an experiment file is TOML text")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise refuse(f"is {size} bytes, and experiment files are short TOML texts (at most "
                         f"{MAX_FILE_BYTES} bytes): is it the right file?")
        return path.read_bytes()
    except OSError as err:
        raise refuse(f"cannot be read: {err.strerror or err}") from None


def read_overridden(path: Path, overrides: list[str] = (), seeds: list[int] | None = None,
                    device: str | None = None, data_root: str | None = None) -> dict[str, Any]:
    """The raw data of an experiment file (not yet validated) with the ``--set`` ``overrides``
    applied, and ``seeds``, ``device`` and ``data_root`` (from the command line) replacing the
    file's values; what ``lifelong run`` and ``lifelong sweep`` both start from."""
    raw = apply_overrides(read_raw(path), list(overrides), str(path))
    for key, value in (("seeds", None if seeds is None else list(seeds)), ("device", device),
                       ("data_root", data_root)):
        if value is not None:
            raw[key] = value
    return raw


def load_experiment(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None,
                    device: str | None = None, data_root: str | None = None) -> Experiment:
    """Read, override and validate an experiment file; raise :class:`ConfigError` on any problem.

    ``seeds``, ``device`` and ``data_root`` (from the command line) replace the file's values.
    """
    path = Path(path)
    raw = read_overridden(path, overrides, seeds, device, data_root)
    if "sweep" in raw:
        raise ConfigError(str(path), [("sweep", "this file declares a sweep: run it with `lifelong sweep`")])
    return validate_experiment(raw, str(path), default_name=path.stem)


def validate_experiment(raw: dict[str, Any], source: str, default_name: str = "experiment") -> Experiment:
    """Validate raw experiment data (as read from TOML); see :func:`load_experiment`."""
    problems: list[tuple[str, str]] = []
    top = _validate(TopLevel, raw, "", problems)
    if top is None:
        raise ConfigError(source, problems)
    name_problem = None if top.name is not None else plain_name_problem(default_name)
    if name_problem:
        problems.append(("name", f"not set, and the default (the file's name without its extension) "
                                 f"{name_problem}; set name = \"...\" in the file"))

    scenario_raw = dict(top.scenario)
    family = _scenario_family(scenario_raw.pop("name", None), problems)
    scenario_params = family and _validate(family.params, scenario_raw, "scenario", problems)
    if scenario_params is not None and top.data_root is not None and "data_root" in family.params.model_fields:
        # An explicit root (--data-root or the top-level key) wins; without one the builders
        # read $LIFELONG_DATA, so a machine's own data location never enters the config.
        scenario_params = scenario_params.model_copy(update={"data_root": str(resolve_data_root(top.data_root))})

    evaluation = _validate(EvalSettings, top.evaluation, "evaluation", problems)
    online = _validate(OnlineSettings, top.online, "online", problems)
    logging = _validate(LoggingParams, top.logging, "logging", problems)
    if logging is not None and "tensorboard" in logging.loggers and (problem := tensorboard_problem()):
        problems.append(("logging.loggers", problem))
    if evaluation is not None and evaluation.full_test and getattr(scenario_params, "protocol", None) == "few-shot":
        problems.append(("evaluation.full_test", "needs a class-, task- or domain-incremental stream: few-shot "
                                                 "labels only mean something within an episode"))

    default_model = dict(top.model)
    specs = []
    for label, table in top.strategies.items():
        if not label.strip() or not label.isprintable():
            # A label is printed in messages, reports and the terminal: control characters
            # (escape sequences, NUL, newlines) would garble or forge what a user reads.
            problems.append(("strategies", f"label {label!r} must be printable text, not empty"))
            continue
        prefix = f"strategies.{label}"
        table = dict(table)
        strategy_name = table.pop("strategy", label)
        cls = _lookup(strategies.STRATEGIES, strategy_name, f"{prefix}.strategy", problems)
        model_table = table.pop("model", default_model)
        model_prefix = f"{prefix}.model" if model_table is not default_model else "model"
        if not isinstance(model_table, dict):
            problems.append((model_prefix, "must be a table"))
            continue
        model_name = model_table.get("name", "mlp")
        model_cls = _lookup(strategies.MODELS, model_name, f"{model_prefix}.name", problems)
        model_params = model_cls and _validate(
            model_cls.Params, {k: v for k, v in model_table.items() if k != "name"}, model_prefix, problems)
        config = cls and _validate(cls.Config, table, prefix, problems)
        if cls and config and model_params:
            # A user's class is recorded by its target, so that config.json re-imports it (resume, sweeps).
            name = strategy_name if ":" in strategy_name else cls.name
            specs.append(StrategySpec(label, name, config, model_name, model_params, model_prefix))

    if problems:  # the shared [model] table is checked once per strategy: report it once
        raise ConfigError(source, list(dict.fromkeys(problems)))
    return Experiment(name=top.name or default_name, source=source, seeds=tuple(top.seeds),
                      device=top.device, threads=top.threads, scenario_name=family.name,
                      scenario_params=scenario_params, evaluation=evaluation,
                      strategies=tuple(specs), online=online,
                      logging=LoggingSettings(tuple(logging.loggers), logging.every))
