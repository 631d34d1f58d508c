"""Experiment files: every kind of bad file exits with status 2 and a one-paragraph message
naming the file and the field path, without a traceback; good files and overrides resolve."""

import pytest

from experiments import experiment_toml, write_experiment  # tests/simulator/experiments.py

from simulator import cli
from simulator.config import ConfigError, load_experiment, parse_value

GOOD = experiment_toml("tiny", model=None, evaluation={"episodes": 2, "adapt_steps": 1},
                       strategies={"finetune": {"lr": 0.1, "epochs": 1}})


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(tmp_path, capsys, text, *needles):
    path = write_experiment(tmp_path, text)
    code, out, err = run_cli(["run", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "Traceback" not in err
    assert str(path) in err
    assert len(err.strip().splitlines()) == 1, err     # one paragraph
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()             # nothing half-written
    return err


def test_unknown_key(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 0.1"),
                      "strategies.finetune.learning_rate: unknown key (valid keys:", "epochs")


def test_unknown_top_level_key(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, "colour = 'red'\n" + GOOD, "colour: unknown key")


def test_wrong_type(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("num_tasks = 2", 'num_tasks = "two"'),
                      "scenario.num_tasks: must be an integer, got 'two'")


def test_negative_learning_rate(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("lr = 0.1", "lr = -0.5"),
                      "strategies.finetune.lr: must be > 0")


def test_zero_tasks(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("num_tasks = 2", "num_tasks = 0"),
                      "scenario.num_tasks: must be > 0")


def test_unknown_strategy_lists_the_valid_ones(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("[strategies.finetune]", "[strategies.mamml]"),
                      "strategies.mamml.strategy: unknown strategy 'mamml'", "valid:", "finetune", "joint")


def test_unknown_scenario_lists_the_valid_ones(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace('name = "split-digits"', 'name = "split-digitz"'),
                      "scenario.name: unknown scenario 'split-digitz'", "split-digits", "sinusoid")


def test_missing_file(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "nope.toml" in err and "no such file" in err


def test_invalid_toml_syntax(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD + "\n[strategies.joint\n", "not valid TOML")


def test_inconsistent_scenario_parameters(tmp_path, capsys):
    assert_user_error(tmp_path, capsys, GOOD.replace("num_tasks = 2", "num_tasks = 6"),
                      "scenario:", "exceeds the 10 digit classes")


def test_several_problems_are_reported_together(tmp_path, capsys):
    err = assert_user_error(tmp_path, capsys,
                            GOOD.replace("lr = 0.1", "lr = 0").replace("episodes = 2", "episodes = -1"),
                            "strategies.finetune.lr: must be > 0", "evaluation.episodes: must be > 0")
    assert err.count(";") >= 1


def test_bad_override_value(tmp_path, capsys):
    path = write_experiment(tmp_path, GOOD)
    code, _, err = run_cli(["run", str(path), "--set", "strategies.finetune.epochs=0"], capsys)
    assert code == 2 and "strategies.finetune.epochs: must be > 0" in err


def test_cuda_requested_without_cuda(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_experiment(tmp_path, GOOD)
    code, _, err = run_cli(["run", str(path), "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_overrides_seeds_and_defaults_resolve(tmp_path):
    path = write_experiment(tmp_path, GOOD)
    exp = load_experiment(path, ["strategies.finetune.lr=0.05", "scenario.protocol=task-incremental",
                                 "model.hidden=[16]"], seeds=[3, 4])
    resolved = exp.resolved()
    assert exp.seeds == (3, 4)
    assert resolved["strategies"]["finetune"]["lr"] == 0.05
    assert resolved["strategies"]["finetune"]["batch_size"] == 32          # default filled in
    assert resolved["strategies"]["finetune"]["model"] == {"name": "mlp", "hidden": [16], "activation": "relu",
                                                         "init": "pytorch"}
    assert resolved["scenario"]["protocol"] == "task-incremental"
    assert resolved["evaluation"]["episodes"] == 2


def test_labels_pick_implementations(tmp_path):
    text = GOOD + '\n[strategies.joint_reset]\nstrategy = "joint"\nreset = true\n'
    exp = load_experiment(write_experiment(tmp_path, text))
    assert [(s.label, s.name) for s in exp.strategies] == [("finetune", "finetune"), ("joint_reset", "joint")]
    assert exp.strategies[1].config.reset is True


def test_parse_value_reads_toml_scalars_and_falls_back_to_strings():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("split-digits") == "split-digits"


def test_config_error_names_every_problem():
    err = ConfigError("f.toml", [("a.b", "must be > 0"), ("c", "required")])
    assert str(err) == "invalid experiment file f.toml: a.b: must be > 0; c: required"


def test_list_prints_every_strategy_scenario_and_parameter(capsys):
    import scenarios
    import strategies

    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for name in scenarios.available():
        assert f"  {name}: " in out
        for field, info in scenarios.family(name).params.model_fields.items():
            assert f"{field}: " in out
    for name in strategies.available():
        assert f"  {name}: " in out
        for field, info in strategies.strategy_class(name).Config.model_fields.items():
            default = info.default if info.default_factory is None else info.default_factory()
            assert f"{field}: " in out and repr(default) in out
    assert "num_tasks: int = 5" in out and "lr: float = 0.1" in out


@pytest.mark.parametrize("argv", [["run"], ["run", "x.toml", "--seeds", "a,b"], ["frobnicate"]])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
