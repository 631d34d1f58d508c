"""User-defined streams: from tensors and datasets in Python, and from a function named in an
experiment file."""

import pytest
import torch
from torch.utils.data import TensorDataset

import scenarios
from scenarios import from_datasets, from_tensors
from scenarios.base import ScenarioError
from simulator.cli import main
from simulator.config import ConfigError, load_experiment


def blobs(c, n=40):
    g = torch.Generator().manual_seed(c)
    y = torch.arange(2 * c, 2 * c + 2).repeat(n // 2)
    return torch.randn(n, 3, generator=g) + y[:, None], y


def test_from_tensors_keeps_examples_and_labels():
    tasks = [(*blobs(0), *blobs(0, 20)), (*blobs(1), *blobs(1, 20))]
    stream = from_tensors(tasks, name="blobs", task_names=["first", "second"])
    assert stream.spec.output_size == 4 and stream.spec.input_shape == (3,)
    assert [t.name for t in stream] == ["first", "second"] and [t.classes for t in stream] == [(0, 1), (2, 3)]
    x, y = stream[1].train.examples()
    assert torch.equal(x, tasks[1][0]) and torch.equal(y, tasks[1][1])
    ti = from_tensors(tasks, protocol="task-incremental")
    assert ti[1].mask.tolist() == [False, False, True, True]
    fs = from_tensors(tasks, protocol="few-shot", ways=2)
    assert fs.spec.output_size == 2 and fs[1].episodes("test", 2, 1, 1, torch.Generator()).support_y.tolist() == [[0, 1]] * 2


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (x.to(torch.uint8), y), "dtype torch.uint8; inputs must be floating point"),
    (lambda x, y: (x, y.float()), "integer class labels"),
    (lambda x, y: (x[:5], y), "x needs one row per label"),
    (lambda x, y: (x, y - 10), "negative label"),
])
def test_from_tensors_rejects_bad_input_clearly(bad, message):
    x, y = bad(*blobs(0))
    with pytest.raises(ScenarioError, match=message):
        from_tensors([(x, y, *blobs(0))])
    with pytest.raises(ScenarioError, match="ways .* is required"):
        from_tensors([(*blobs(0), *blobs(0))], protocol="few-shot")


def test_from_datasets_reads_torch_datasets():
    x, y = blobs(0)
    stream = from_datasets([(TensorDataset(x, y), TensorDataset(x[:10], y[:10]))])
    assert torch.equal(stream[0].train.examples()[0], x) and len(stream[0].test) == 10
    with pytest.raises(ScenarioError, match="must yield \\(input, label\\) pairs"):
        from_datasets([(TensorDataset(x), TensorDataset(x))])


STREAMS = '''
import torch
from scenarios import from_tensors

def make_stream(num_tasks: int = 2, noise: float = 0.5, seed: int = 0):
    """Two noisy blobs per task."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for c in range(num_tasks):
        y = torch.arange(2 * c, 2 * c + 2).repeat(20)
        x = noise * torch.randn(40, 3, generator=g) + y[:, None].float()
        tasks.append((x, y, x + 0.01, y))
    return from_tensors(tasks, name="blobs")

def not_a_stream(seed):
    return [1, 2, 3]

def no_seed(num_tasks=2):
    return None
'''


@pytest.fixture
def user_module(module_in_cwd):
    """A module of stream functions in the current directory, under a name unique to the test."""
    return module_in_cwd(STREAMS, "user_streams")


def write_experiment(tmp_path, scenario: str):
    path = tmp_path / "exp.toml"
    path.write_text(f"[scenario]\n{scenario}\n[evaluation]\nepisodes = 2\nadapt_steps = 1\n"
                    f"[strategies.finetune]\nepochs = 1\n")
    return path


def test_experiment_file_names_a_stream_function(user_module, tmp_path):
    exp = write_experiment(tmp_path, f'name = "{user_module}:make_stream"\nnum_tasks = 3\nnoise = 1')
    experiment = load_experiment(exp)
    assert experiment.scenario_name == f"{user_module}:make_stream"
    assert experiment.resolved()["scenario"] == {"name": f"{user_module}:make_stream", "num_tasks": 3, "noise": 1.0}
    stream = scenarios.build(experiment.scenario_name, experiment.scenario_params.model_dump(), seed=0)
    assert len(stream) == 3 and stream.spec.name == "blobs"
    assert main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.parametrize("scenario, message", [
    ('name = "no_such_module_xyz:make_stream"', "scenario.name: cannot import module 'no_such_module_xyz'"),
    ('name = "{m}:missing"', "scenario.name: module '{m}' has no attribute 'missing'"),
    ('name = "{m}:no_seed"', "scenario.name: {m}:no_seed must accept a keyword argument 'seed'"),
    ('name = "{m}:make_stream"\nnum_taks = 3', "scenario.num_taks: unknown key"),
    ('name = "{m}:make_stream"\nnum_tasks = "three"', "scenario.num_tasks: must be an integer, got 'three'"),
])
def test_experiment_file_callable_problems_are_config_errors(user_module, tmp_path, capsys, scenario, message):
    exp = write_experiment(tmp_path, scenario.format(m=user_module))
    with pytest.raises(ConfigError) as err:
        load_experiment(exp)
    assert message.format(m=user_module) in str(err.value)
    assert main(["run", str(exp), "--out", str(tmp_path / "out")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_function_returning_the_wrong_type_is_a_clear_error(user_module, tmp_path, capsys):
    exp = write_experiment(tmp_path, f'name = "{user_module}:not_a_stream"')
    experiment = load_experiment(exp)
    with pytest.raises(ScenarioError, match="returned a builtins.list; it must return a scenarios.Stream"):
        scenarios.build(experiment.scenario_name, {}, seed=0)
    assert main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifelong: error: scenario") and "not_a_stream returned a builtins.list" in err
    assert "Traceback" not in err
