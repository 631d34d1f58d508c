"""No fixed overhead in a run: the Python API's thread policy, one commit per finished run,
figures drawn once, and nothing rendered or rewritten that did not change."""

import shutil
from pathlib import Path

import pytest
import torch

from experiments import ONE_EPOCH, experiment_raw  # tests/simulator/experiments.py

import scenarios
import strategies
from simulator.config import validate_experiment
from simulator.evaluator import EvalSettings
from simulator.report import INPUTS_FILE, content, write_report
from simulator.experiment import run_experiment
from simulator.runner import run
from strategies.finetune import Finetune


def tiny_experiment(**overrides):
    """The experiment "tiny" (split-digits in 2 tasks, finetune and joint, seeds 0 and 1), validated;
    ``overrides`` replace its top-level keys."""
    raw = experiment_raw("tiny", seeds=[0, 1], model={"name": "mlp", "hidden": [16]},
                         evaluation={"episodes": 3, "adapt_steps": 1},
                         strategies={"finetune": ONE_EPOCH, "joint": ONE_EPOCH})
    return validate_experiment({**raw, **overrides}, "test")


@pytest.fixture
def caller_threads():
    """The caller runs with 3 torch threads (not a run's count), restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


@pytest.fixture
def learn_threads(monkeypatch):
    """The torch thread count seen by every ``Finetune.learn`` call."""
    seen = []
    learn = Finetune.learn

    def spy(self, task):
        seen.append(torch.get_num_threads())
        return learn(self, task)

    monkeypatch.setattr(Finetune, "learn", spy)
    return seen


@pytest.fixture
def renders(monkeypatch):
    """The ``draw`` flag of every report actually rendered (not skipped as current)."""
    flags = []
    build = content.build

    def spy(runs, draw=True, **options):
        flags.append(draw)
        return build(runs, draw=draw, **options)

    monkeypatch.setattr(content, "build", spy)
    return flags


def _run(threads=None):
    stream = scenarios.build("split-digits", {"num_tasks": 2}, seed=0)
    model = strategies.build_model("mlp", {"hidden": [8]}, stream.spec)
    extra = {} if threads is None else {"threads": threads}
    return run(stream, strategies.build("finetune", {"epochs": 1}), model, seed=0,
               settings=EvalSettings(episodes=2, adapt_steps=1), **extra)


def test_run_uses_one_thread_by_default_and_gives_the_callers_count_back(caller_threads, learn_threads):
    _run()
    assert learn_threads == [1, 1] and torch.get_num_threads() == caller_threads
    _run(threads=2)
    assert learn_threads[2:] == [2, 2] and torch.get_num_threads() == caller_threads


def test_run_gives_the_callers_thread_count_back_when_it_fails(caller_threads, monkeypatch):
    def fail(self, task):
        raise RuntimeError("learn failed")

    monkeypatch.setattr(Finetune, "learn", fail)
    with pytest.raises(RuntimeError, match="learn failed"):
        _run()
    assert torch.get_num_threads() == caller_threads


def test_run_experiment_uses_the_experiments_threads_and_gives_the_callers_back(
        tmp_path, caller_threads, learn_threads):
    run_experiment(tiny_experiment(threads=2, seeds=[0], strategies={"finetune": {"epochs": 1}}), tmp_path,
                   quiet=True)
    assert learn_threads == [2, 2] and torch.get_num_threads() == caller_threads  # one per task


def _files(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file but the lock (rewritten by each process that holds it), with its mtime and bytes."""
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_each_run_is_committed_once_the_figures_drawn_at_the_end_and_a_resume_rewrites_nothing(
        tmp_path, renders, monkeypatch):
    import simulator.experiment as experiment_module

    commits = []
    write_run_dir = experiment_module.write_run_dir

    def spy(out_dir, experiment, results, device, complete, **kwargs):
        commits.append((len(results), complete))
        return write_run_dir(out_dir, experiment, results, device, complete, **kwargs)

    monkeypatch.setattr(experiment_module, "write_run_dir", spy)
    run_experiment(tiny_experiment(), tmp_path, quiet=True)
    assert commits == [(1, False), (2, False), (3, False), (4, True)]  # 2 strategies x 2 seeds
    assert renders == [False, False, False, True]                       # tables after each run, figures once
    assert len(list((tmp_path / "figures").glob("*.png"))) == 6     # with the training curves of logs/

    before = _files(tmp_path)
    run_experiment(tiny_experiment(), tmp_path, quiet=True, resume=True)   # nothing to do
    assert renders == [False, False, False, True] and _files(tmp_path) == before


def test_a_report_is_rendered_again_only_when_an_input_or_one_of_its_files_changed(
        digits_run, tmp_path, renders):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    shutil.copytree(digits_run, run_dir)
    write_report([run_dir], out, draw=False)
    before = _files(out)
    assert renders == [False] and INPUTS_FILE in before
    write_report([run_dir], out, draw=False)
    assert renders == [False] and _files(out) == before        # current: nothing rendered or written

    (out / "report.md").unlink()
    write_report([run_dir], out, draw=False)
    assert renders == [False, False] and (out / "report.md").is_file()
    results = run_dir / "results.json"
    results.write_text(results.read_text() + "\n")
    write_report([run_dir], out, draw=False)
    assert renders == [False, False, False]                     # an input changed
    write_report([run_dir], out, draw=True)
    assert renders == [False, False, False, True]               # the same inputs, asked with figures
