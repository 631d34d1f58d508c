"""A user's own strategy class and model factory named in experiment files ("package.module:name"):
the example of docs/guides/add-strategy.md through run, a kill and resume, sweep and report; every
refusal by its message."""

import json
import re
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from experiments import experiment_toml, write_experiment  # tests/simulator/experiments.py
from kill_switch import kill_after_checkpoint  # tests/simulator/kill_switch.py

import strategies
import strategies.user
from simulator import cli
from simulator.config import ConfigError, load_experiment, validate_experiment
from simulator.rundir import load_tensors
from simulator.experiment import run_experiment
from simulator.store import ResultsDB

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "add-strategy.md"
MY_METHODS = r"<!-- file: my_methods.py -->\n```python\n(.*?)```"  # the guide's my_methods.py

# The experiment "mine": the guide's strategy class on its model factory.
MINE = {"model": {"name": "my_methods:small_net", "width": 16}, "evaluation": {"episodes": 3, "adapt_steps": 1},
        "strategies": {"anchor": {"strategy": "my_methods:L2Anchor", "epochs": 1}}}
EXPERIMENT = experiment_toml("mine", **MINE)


@pytest.fixture
def example(tmp_path, monkeypatch):
    """A folder holding the guide's ``my_methods.py`` and :data:`EXPERIMENT` as ``mine.toml``,
    made the current directory (where the user's module is imported from)."""
    (tmp_path / "my_methods.py").write_text(re.search(MY_METHODS, GUIDE.read_text(), re.S).group(1))
    write_experiment(tmp_path, EXPERIMENT, "mine.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_run_killed_and_resumed_is_bit_identical_then_reported(example, capsys, monkeypatch):
    # The uninterrupted reference, without its report (figures cost seconds; the resumed run draws them).
    run_experiment(load_experiment("mine.toml"), "clean", quiet=True, report=False)
    config = json.loads((example / "clean" / "config.json").read_text())
    assert config["strategies"]["anchor"]["strategy"] == "my_methods:L2Anchor"
    assert config["strategies"]["anchor"]["strength"] == 1.0      # the Config's default, resolved
    assert config["strategies"]["anchor"]["model"] == {"name": "my_methods:small_net", "width": 16}
    # A fresh process (importing the user's module itself), killed after the first task's checkpoint.
    kill_after_checkpoint(1, ["run", "mine.toml", "--out", "killed", "--quiet"], example)
    assert len(list((example / "killed" / "checkpoints").glob("*.pt"))) == 1
    capsys.readouterr()
    # The resume imports the module afresh from its name, as a new process would.
    monkeypatch.delitem(sys.modules, "my_methods")
    strategies.user.user_strategy.cache_clear()
    strategies.user.user_model.cache_clear()
    assert cli.main(["run", "mine.toml", "--out", "killed", "--resume", "--quiet"]) == 0
    assert sys.modules["my_methods"].L2Anchor is strategies.strategy_class("my_methods:L2Anchor")
    clean, resumed = load_tensors(example / "clean"), load_tensors(example / "killed")
    assert sorted(clean) == ["anchor/seed0/acc", "anchor/seed0/loss"]
    assert all(clean[key].tobytes() == resumed[key].tobytes() for key in clean)
    assert cli.main(["report", "killed"]) == 0
    assert "anchor" in (example / "killed" / "report.md").read_text()


def test_sweep_over_a_user_strategy_option_and_a_user_model_option(example, capsys):
    sweep = {"strategies.anchor.strength": [0.0, 10.0], "model.width": [8]}
    write_experiment(example, experiment_toml("mine", **MINE, sweep=sweep), "mine.toml")
    assert cli.main(["sweep", "mine.toml", "--out", "sw", "--quiet"]) == 0
    assert "trials: 2 in all, 0 already finished, 2 run now, 0 failed" in capsys.readouterr().out
    db = ResultsDB(example / "sw" / "results.db")
    try:
        points = sorted((json.loads(r["point"])["strategies.anchor.strength"], r["status"]) for r in db.runs())
    finally:
        db.close()
    assert points == [(0.0, "done"), (10.0, "done")]
    trial = next((example / "sw" / "trials").iterdir())
    config = json.loads((trial / "config.json").read_text())
    assert config["strategies"]["anchor"]["model"] == {"name": "my_methods:small_net", "width": 8}


# -- refusals: each before anything runs, with its field path and a message that says why -----------------

BAD_MODULE = textwrap.dedent('''
    import strategies
    from torch import nn

    class NotAStrategy:
        pass

    class LearnsNothing(strategies.Strategy):
        pass

    class WrongLearn(strategies.Strategy):
        def learn(self):
            return {}

    class WrongInit(strategies.Strategy):
        def __init__(self, config):
            super().__init__(config)

        def learn(self, task):
            return {}

    class PlainConfig(strategies.Strategy):
        Config = dict

        def learn(self, task):
            return {}

    def no_spec(width: int = 3):
        return nn.Linear(2, 2)

    def not_a_module(spec):
        return "a string"

    def broken(spec):
        raise RuntimeError("no weights here")

    def sized(spec, width: int = 4):
        return nn.Linear(spec.input_shape[0] * spec.input_shape[1], spec.output_size)

    a_number = 3
''')


@pytest.fixture
def bad(tmp_path, monkeypatch):
    """The name of a fresh module (unique per test: imported modules are cached) of bad user code."""
    name = f"bad_code_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(BAD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def experiment(strategy: dict, model: dict | None = None) -> dict:
    return {"scenario": {"name": "split-digits", "num_tasks": 2}, "model": model or {"name": "mlp"},
            "strategies": {"mine": strategy}}


def refusal(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_experiment(raw, "exp.toml")
    return str(caught.value)


@pytest.mark.parametrize("target, expected", [
    ("no_such_module_xyz:Thing", "strategies.mine.strategy: cannot import module 'no_such_module_xyz' for "
                                 "strategy 'no_such_module_xyz:Thing' (No module named 'no_such_module_xyz'); it "
                                 "must be installed or lie in the current directory"),
    ("{bad}:Missing", "strategies.mine.strategy: module '{bad}' has no attribute 'Missing' (strategy '{bad}:Missing')"),
    ("{bad}:NotAStrategy", "strategies.mine.strategy: strategy '{bad}:NotAStrategy' must be a subclass of "
                           "strategies.Strategy (the protocol: setup, learn, adapt, predict, state_dict, "
                           "load_state_dict); it is a class that does not derive from it"),
    ("{bad}:a_number", "must be a subclass of strategies.Strategy (the protocol: setup, learn, adapt, predict, "
                       "state_dict, load_state_dict); it is a int"),
    ("{bad}:LearnsNothing", "strategy '{bad}:LearnsNothing' defines neither learn(task) nor observe(x, y, task)"),
    ("{bad}:WrongLearn", "strategy '{bad}:WrongLearn': learn cannot be called as learn(task) (too many positional "
                         "arguments)"),
    ("{bad}:WrongInit", "strategy '{bad}:WrongInit': __init__ cannot be called as __init__(config, label=...) "
                        "(got an unexpected keyword argument 'label')"),
    ("{bad}:PlainConfig", "strategy '{bad}:PlainConfig': its Config must be a subclass of strategies.StrategyConfig"),
    ("{bad}:", "strategies.mine.strategy: '{bad}:' is not of the form 'package.module:name'"),
    ("L2Anchor", "strategies.mine.strategy: unknown strategy 'L2Anchor' (valid: anml, avalanche.AGEM"),
    ("L2Anchor", "snail); one of your own is named 'package.module:name'"),
])
def test_a_strategy_that_cannot_serve_is_refused_by_its_message(bad, target, expected):
    assert expected.format(bad=bad) in refusal(experiment({"strategy": target.format(bad=bad)}))


def test_unknown_and_mistyped_options_are_refused_as_for_built_in_strategies(bad, tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(re.search(
        MY_METHODS, GUIDE.read_text(), re.S).group(1))
    message = refusal(experiment({"strategy": "my_methods:L2Anchor", "strenght": 1.0}))
    assert "strategies.mine.strenght: unknown key (valid keys: adapt_lr, lr, epochs, strength)" in message
    message = refusal(experiment({"strategy": "my_methods:L2Anchor", "strength": -1.0}))
    assert "strategies.mine.strength: must be >= 0" in message
    message = refusal(experiment({"strategy": "finetune"}, {"name": f"{bad}:sized", "depth": 2}))
    assert "model.depth: unknown key (valid keys: width)" in message
    message = refusal(experiment({"strategy": "finetune"}, {"name": f"{bad}:sized", "width": "wide"}))
    assert "model.width: must be an integer, got 'wide'" in message


@pytest.mark.parametrize("factory, expected", [
    ("no_spec", "model.name: model '{bad}:no_spec' must accept a keyword argument 'spec' (the stream spec it is "
                "sized for: spec.input_shape, spec.output_size)"),
    ("a_number", "model.name: model '{bad}:a_number' is a int, not a function or class returning a torch.nn.Module"),
    ("Missing", "model.name: module '{bad}' has no attribute 'Missing' (model '{bad}:Missing')"),
])
def test_a_model_factory_with_a_bad_signature_is_refused_by_its_message(bad, factory, expected):
    assert expected.format(bad=bad) in refusal(experiment({"strategy": "finetune"}, {"name": f"{bad}:{factory}"}))


@pytest.mark.parametrize("factory, expected", [
    ("not_a_module", "model: {bad}:not_a_module cannot be built for stream 'split-digits': model factory "
                     "{bad}:not_a_module returned a builtins.str; it must return a torch.nn.Module"),
    ("broken", "model: {bad}:broken cannot be built for stream 'split-digits': model factory {bad}:broken failed: "
               "RuntimeError: no weights here"),
])
def test_a_factory_that_returns_no_module_stops_the_run_before_it_starts(bad, tmp_path, capsys, factory, expected):
    path = write_experiment(tmp_path, EXPERIMENT.replace("my_methods:small_net", f"{bad}:{factory}")
                            .replace("width = 16", "").replace("my_methods:L2Anchor", "finetune"))
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected.format(bad=bad) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
