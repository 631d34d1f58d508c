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
import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

import scenarios
import strategies
from scenarios.base import Params, ScenarioError
from scenarios.data import resolve_data_root
from simulator.evaluator import EvalSettings


class ConfigError(ValueError):
    """A bad experiment file or override: ``str(err)`` is one paragraph for the user."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        details = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
        super().__init__(f"invalid experiment file {source}: {details}")


class EvaluationParams(Params):
    episodes: int = Field(20, gt=0, description="held-out episodes per task")
    adapt_steps: int = Field(5, ge=0, description="K: adaptation steps scored (0..K)")
    shots: int | None = Field(None, gt=0, description="support items per class (default: the scenario's)")
    query: int | None = Field(None, gt=0, description="query items per class (default: the scenario's)")
    chunk: int | None = Field(None, gt=0, description="episodes adapted at once (default: all)")
    full_test: bool = Field(False, description="score k = 0 on each task's whole test pool (as Avalanche does); "
                                               "k > 0 adapts on `episodes` support sets from the training pool")


class TopLevel(Params):
    name: str | None = Field(None, min_length=1, description="experiment name (default: the file's stem)")
    seeds: list[int] = Field([0], min_length=1, description="one run per seed and strategy")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="cpu, cuda, or auto (cuda when available)")
    threads: int = Field(1, gt=0, description="torch CPU threads")
    scenario: dict[str, Any] = Field(description="the stream: name plus its parameters")
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "mlp"}, description="backbone: name plus parameters")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="evaluation settings")
    strategies: dict[str, dict[str, Any]] = Field(min_length=1, description="label -> strategy table")
    data_root: str | None = Field(None, min_length=1, description="folder of the data files (default: $LIFELONG_DATA, else ./data)")


@dataclass(frozen=True)
class StrategySpec:
    """One strategy of an experiment, validated."""

    label: str
    name: str
    config: Any
    model_name: str
    model_params: Any


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

    def resolved(self) -> dict[str, Any]:
        return {
            "name": self.name, "seeds": list(self.seeds), "device": self.device, "threads": self.threads,
            "scenario": {"name": self.scenario_name, **self.scenario_params.model_dump()},
            "evaluation": dataclasses.asdict(self.evaluation),
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
}


def _problems(err: ValidationError, prefix: str, model: type[Params]) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        path = ".".join(([prefix] if prefix else []) + loc)
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (valid keys: {', '.join(model.model_fields)})"
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
        problems.append((path, f"unknown {registry.what} {name!r} (valid: {', '.join(registry.names())})"))
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
    """The TOML data of an experiment file; :class:`ConfigError` if missing or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", f"no such file (looked in {path.resolve().parent})")])
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), [("", f"not valid TOML: {err}")]) from None


def load_experiment(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None,
                    device: str | None = None, data_root: str | None = None) -> Experiment:
    """Read, override and validate an experiment file; raise :class:`ConfigError` on any problem.

    ``seeds``, ``device`` and ``data_root`` (from the command line) replace the file's values.
    """
    path = Path(path)
    source = str(path)
    raw = apply_overrides(read_raw(path), list(overrides), source)
    if "sweep" in raw:
        raise ConfigError(source, [("sweep", "this file declares a sweep: run it with `lifelong sweep`")])
    if seeds is not None:
        raw["seeds"] = list(seeds)
    if device is not None:
        raw["device"] = device
    if data_root is not None:
        raw["data_root"] = data_root
    return validate_experiment(raw, source, default_name=path.stem)


def validate_experiment(raw: dict[str, Any], source: str, default_name: str = "experiment") -> Experiment:
    """Validate raw experiment data (as read from TOML); see :func:`load_experiment`."""
    problems: list[tuple[str, str]] = []
    top = _validate(TopLevel, raw, "", problems)
    if top is None:
        raise ConfigError(source, problems)
    if len(set(top.seeds)) != len(top.seeds):
        problems.append(("seeds", f"must not repeat a seed: {top.seeds}"))
    if any(s < 0 for s in top.seeds):
        problems.append(("seeds", "must be >= 0"))

    scenario_raw = dict(top.scenario)
    family = _scenario_family(scenario_raw.pop("name", None), problems)
    scenario_params = family and _validate(family.params, scenario_raw, "scenario", problems)
    if scenario_params is not None and top.data_root is not None and "data_root" in family.params.model_fields:
        # An explicit root (--data-root or the top-level key) wins; without one the builders
        # read $LIFELONG_DATA, so a machine's own data location never enters the config.
        scenario_params = scenario_params.model_copy(update={"data_root": str(resolve_data_root(top.data_root))})

    evaluation = _validate(EvaluationParams, top.evaluation, "evaluation", problems)
    if evaluation is not None and evaluation.full_test and getattr(scenario_params, "protocol", None) == "few-shot":
        problems.append(("evaluation.full_test", "needs a class-, task- or domain-incremental stream: few-shot "
                                                 "labels only mean something within an episode"))

    default_model = dict(top.model)
    specs = []
    for label, table in top.strategies.items():
        prefix = f"strategies.{label}"
        table = dict(table)
        cls = _lookup(strategies.STRATEGIES, table.pop("strategy", label), f"{prefix}.strategy", problems)
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
            specs.append(StrategySpec(label, cls.name, config, model_name, model_params))

    if problems:  # the shared [model] table is checked once per strategy: report it once
        raise ConfigError(source, list(dict.fromkeys(problems)))
    return Experiment(name=top.name or default_name, source=source, seeds=tuple(top.seeds),
                      device=top.device, threads=top.threads, scenario_name=family.name,
                      scenario_params=scenario_params, evaluation=EvalSettings(**evaluation.model_dump()),
                      strategies=tuple(specs))
