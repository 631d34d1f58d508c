"""Loggers (simulator/loggers.py): the CSV and TensorBoard logs of a run, what goes into them,
how they survive a kill, the [logging] table, and the training-curve figure of the report."""

import csv
import importlib.util
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import ONE_EPOCH, experiment_toml, write_experiment  # tests/simulator/experiments.py

from simulator import cli, loggers
from simulator.loggers import COLUMNS, CsvLogger, LogError, LoggingSettings, RunLog, mean_curve, read_csv_log, run_name
from simulator.rundir import load_tensors


def logged_experiment(names: list[str]) -> str:
    """The experiment "logged" with the loggers ``names``, a row every 4 steps: finetune and maml
    (12 meta-iterations a task), one seed, two tasks."""
    return experiment_toml("logged", evaluation={"episodes": 4, "adapt_steps": 2},
                           logging={"loggers": names, "every": 4},
                           strategies={"finetune": ONE_EPOCH, "maml": {"meta_iterations": 12}})


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(experiment_file: Path, out: Path, **options):
    """Run an experiment file without its report (figures cost seconds)."""
    from simulator.config import load_experiment
    from simulator.experiment import run_experiment

    return run_experiment(load_experiment(experiment_file), out, quiet=True, report=False, **options)


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """The experiment file and a finished run of it (finetune and maml, one seed, two tasks)
    with its CSV and TensorBoard logs."""
    base = tmp_path_factory.mktemp("logged")
    tensorboard = ["csv", "tensorboard"] if importlib.util.find_spec("tensorboard") else ["csv"]
    exp = write_experiment(base, logged_experiment(tensorboard))
    _run(exp, base / "out")
    return exp, base / "out"


# -- the CSV logger on its own -----------------------------------------------------------------

def test_csv_logger_resumes_at_its_mark_without_duplicating_or_losing_rows(tmp_path):
    path = tmp_path / "logs" / "run.csv"
    log = CsvLogger(path, "maml", 3)
    log.scalar("train/loss", 0.5, step=1, task=0)
    mark = log.commit()
    log.scalar("train/loss", 0.25, step=2, task=0)   # after the checkpoint: must go on resume
    log.commit()
    log._file.close()                                  # a kill: the .part stays, never renamed
    assert not path.exists() and path.with_name("run.csv.part").exists()

    resumed = CsvLogger(path, "maml", 3, resume=mark)
    resumed.scalar("train/loss", 0.125, step=2, task=0)
    resumed.close()
    assert path.read_text().splitlines() == ["strategy,seed,task,step,tag,value", "maml,3,0,1,train/loss,0.5",
                                             "maml,3,0,2,train/loss,0.125"]
    assert not path.with_name("run.csv.part").exists()


def test_csv_logger_continues_a_finished_log_and_refuses_one_shorter_than_its_mark(tmp_path):
    path = tmp_path / "run.csv"
    log = CsvLogger(path, "a", 0)
    log.scalar("eval/accuracy_k0", 1.0, step=5, task=1)
    mark = log.commit()
    log.close()                       # finished, then killed before the results were committed
    CsvLogger(path, "a", 0, resume=mark).close()
    assert _rows(path) == [{"strategy": "a", "seed": "0", "task": "1", "step": "5", "tag": "eval/accuracy_k0",
                            "value": "1.0"}]
    path.write_text("strategy,seed\n")
    with pytest.raises(LogError, match=rf"log {path} has 14 bytes, but the checkpoint of a seed 0 was taken when it "
                                       rf"had {mark}: the log was changed since. Delete the checkpoint"):
        CsvLogger(path, "a", 0, resume=mark)
    path.unlink()
    with pytest.raises(LogError, match="is missing"):
        CsvLogger(path, "a", 0, resume=mark)


def test_a_fresh_log_replaces_the_log_of_an_earlier_attempt(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("old\n")
    path.with_name("run.csv.part").write_text("older\n")
    CsvLogger(path, "a", 0).close()
    assert path.read_text() == "strategy,seed,task,step,tag,value\n"


def test_run_log_records_numbers_only_and_reads_tensors_and_callables(tmp_path):
    log = RunLog(tmp_path, LoggingSettings(("csv",), every=3), "x y", 1)
    assert not log.due(3)                              # nothing opened: nothing due
    log.open(None)
    assert log.due(3) and log.due(6) and not log.due(4)
    called = []
    log.record({"loss": torch.tensor(0.25), "lr": lambda: called.append(1) or 2, "n": 3, "flag": True,
                "text": "skip", "vector": torch.ones(2), "none": None}, step=3, task=0, prefix="train/")
    log.steps_done = 7
    saved = log.commit()
    log.close()
    assert saved["steps_done"] == 7 and saved["marks"]["csv"] > 0 and called == [1]
    curves = read_csv_log(tmp_path / "logs" / f"{run_name('x y', 1)}.csv")
    assert {tag: v.tolist() for tag, (_, v) in curves.items()} == {
        "train/loss": [0.25], "train/lr": [2.0], "train/n": [3.0], "train/flag": [1.0]}


def test_run_names_are_safe_file_names_and_never_shared():
    assert run_name("finetune", 2) == "finetune-seed2"
    names = {run_name(label, 0) for label in ("a b", "a_b", "a/b", "../a", "ä")}
    assert len(names) == 5 and all("/" not in n and not n.startswith(".") for n in names)


def test_mean_curve_averages_the_seeds_that_logged_each_step():
    steps, values = mean_curve([(np.array([4, 8]), np.array([1.0, 3.0])),
                                (np.array([4, 8, 12]), np.array([2.0, 5.0, 7.0]))])
    assert steps.tolist() == [4, 8, 12] and values.tolist() == [1.5, 4.0, 7.0]


def test_a_damaged_log_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("strategy,seed,task,step,tag,value\nm,0,0,x,train/loss,1.0\n")
    with pytest.raises(LogError, match=rf"{path}: damaged at line 2"):
        read_csv_log(path)
    path.write_text("a,b\n")
    with pytest.raises(LogError, match="not a lifelong log"):
        read_csv_log(path)


# -- what a run logs ---------------------------------------------------------------------------

def test_a_run_logs_iterations_tasks_and_rows_at_the_documented_steps(logged_run):
    _, logged_run = logged_run
    rows = _rows(logged_run / "logs" / "maml-seed0.csv")
    assert tuple(rows[0]) == COLUMNS
    # 12 meta-iterations per task, every 4: iterations 4, 8, 12 of task 0 are steps 4, 8, 12
    # and those of task 1 steps 16, 20, 24; the task and row values at each task's end.
    got = [(r["task"], int(r["step"]), r["tag"]) for r in rows]
    per_task = lambda t, end: [(t, end - 8, "train/meta_loss"), (t, end - 4, "train/meta_loss"),  # noqa: E731
                               (t, end, "train/meta_loss"), (t, end, "task/meta_loss"),
                               (t, end, "task/meta_iterations"), (t, end, "eval/accuracy_k0"),
                               (t, end, "eval/loss_k0"), (t, end, "eval/accuracy_k2"), (t, end, "eval/loss_k2")]
    assert got == per_task("0", 12) + per_task("1", 24)
    tensors = load_tensors(logged_run)
    acc, loss = tensors["maml/seed0/acc"], tensors["maml/seed0/loss"]
    value = {(int(r["step"]), r["tag"]): float(r["value"]) for r in rows}
    # the rows: the mean over the tasks seen (task 0 after the first, both after the second)
    assert value[(12, "eval/accuracy_k0")] == acc[1, 0, 0]
    assert value[(24, "eval/accuracy_k2")] == pytest.approx(acc[2, :, 2].mean(), abs=1e-15)
    assert value[(24, "eval/loss_k0")] == pytest.approx(loss[2, :, 0].mean(), abs=1e-15)
    results = json.loads((logged_run / "results.json").read_text())
    maml = next(r for r in results["runs"] if r["strategy"] == "maml")
    assert value[(12, "task/meta_loss")] == maml["logs"][0]["meta_loss"]
    # finetune reports its minibatch loss; no log is left half-written
    assert {r["tag"] for r in _rows(logged_run / "logs" / "finetune-seed0.csv")} >= {"train/loss", "task/train_loss"}
    assert not list((logged_run / "logs").glob("*.part"))


def test_the_report_has_the_training_curves_and_follows_the_logs(logged_run, tmp_path):
    from simulator.report import ReportError, write_report

    copy = tmp_path / "copy"
    shutil.copytree(logged_run[1], copy)
    write_report([copy], copy, draw=False)
    assert "## Training curves" in (copy / "report.md").read_text()
    (copy / "logs" / "maml-seed0.csv").write_text("strategy,seed,task,step,tag,value\nmaml,0,0,oops,x,1\n")
    with pytest.raises(ReportError, match=f"{copy / 'logs' / 'maml-seed0.csv'}: damaged at line 2"):
        write_report([copy], copy, draw=False)     # a changed log is an input: the report is made again
    for log in (copy / "logs").glob("*.csv"):      # without logs the report has no such section
        log.unlink()
    write_report([copy], copy, draw=False)
    assert "Training curves" not in (copy / "report.md").read_text()


def test_the_training_curve_figure_is_a_png():
    from simulator.report import figures

    png = figures.training_curves([("train/loss", [("a", np.array([1, 2, 3]), np.array([3.0, 2.0, 1.0]))]),
                                   ("eval/loss_k0", [("a", np.array([3]), np.array([1.0])),
                                                     ("b", np.array([3, 6]), np.array([1e-3, 10.0]))])],
                                  {"a": "#000000", "b": "#E69F00"})
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_figure_has_one_panel_per_changing_tag(monkeypatch):
    from simulator.report import content, figures
    from simulator.report.data import RunData, StrategyRuns

    strategy = StrategyRuns("m", (0, 1), np.zeros((2, 2, 1, 1)), ((1.0,),) * 2, ((1.0,),) * 2, ((1.0,),) * 2)
    curve = lambda *v: (np.arange(1, len(v) + 1), np.array(v, dtype=float))  # noqa: E731
    logs = {("m", 0): {"train/loss": curve(1, 2), "task/steps": curve(5, 5), "eval/accuracy_k0": curve(0.5)},
            ("m", 1): {"train/loss": curve(3, 4), "task/steps": curve(5, 5)}}
    run = RunData("d", {}, {"adapt_steps": 0, "runs": []}, (strategy,), logs)
    drawn = []
    monkeypatch.setattr(figures, "training_curves", lambda panels, colours: drawn.append(panels) or b"png")
    (section,) = content._training_sections(run, "", True, {"m": "#000"})
    (figure,) = section.blocks
    assert figure.png() == b"png" and figure.cost == 1  # drawn when the report is written: one panel
    # task/steps is constant and eval/accuracy_k0 a single point: only train/loss is a curve
    ((tag, ((label, steps, values),)),) = drawn[0]
    assert (tag, label, steps.tolist(), values.tolist()) == ("train/loss", "m", [1, 2], [2.0, 3.0])
    assert section.title == "Training curves"


# -- resuming after a kill ---------------------------------------------------------------------

def _killed_past_a_checkpoint(exp: Path, out: Path) -> None:
    """Run ``exp`` into ``out`` in a forked child that checkpoints every 3 iterations and is
    SIGKILLed once maml logged iteration 8 of its first task, its logs flushed to the disk (the
    worst case: rows past the last checkpoint, at iteration 6, are there)."""
    from simulator import runner

    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            sys.stderr = open(os.devnull, "w")
            original = loggers.RunLog.record

            def record_then_maybe_die(self, values, step, task, prefix=""):
                original(self, values, step, task, prefix)
                if self.label == "maml" and prefix == "train/" and step == 8:
                    self.commit()
                    os.kill(os.getpid(), signal.SIGKILL)

            loggers.RunLog.record = record_then_maybe_die
            _run(exp, out, policy=runner.CheckpointPolicy(steps=3))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}


def test_a_kill_past_a_checkpoint_then_resume_gives_the_uninterrupted_logs(logged_run, tmp_path):
    exp, clean = logged_run
    killed = tmp_path / "killed"
    _killed_past_a_checkpoint(exp, killed)
    part = killed / "logs" / "maml-seed0.csv.part"
    assert part.read_text().count("train/meta_loss") == 2   # steps 4 and 8 on disk, 8 past the checkpoint
    board = killed / "logs" / "tensorboard" / "maml-seed0"
    if board.exists():
        assert [step for step, _ in _scalars(board)["train/meta_loss"]] == [4, 8]
    _run(exp, killed, resume=True)
    for name in ("finetune-seed0.csv", "maml-seed0.csv"):
        assert (killed / "logs" / name).read_bytes() == (clean / "logs" / name).read_bytes(), name
    assert not part.exists()
    if not (clean / "logs" / "tensorboard").exists():
        pytest.skip("tensorboard is not installed")
    for name in ("finetune-seed0", "maml-seed0"):   # TensorBoard hides the events past the checkpoint
        resumed = _scalars(killed / "logs" / "tensorboard" / name)
        assert resumed == _scalars(clean / "logs" / "tensorboard" / name) and len(resumed) >= 5


# -- the online loop ---------------------------------------------------------------------------

def test_the_online_loop_logs_its_accuracy_per_window_and_the_anytime_rows(tmp_path):
    from simulator.config import validate_experiment
    from simulator.experiment import run_experiment

    raw = {"name": "online-logged", "seeds": [0], "scenario": {
        "name": "online", "source": "split-digits", "source_params": {"num_tasks": 2}, "batch_size": 10},
        "model": {"name": "mlp", "hidden": [8]}, "evaluation": {"episodes": 2, "adapt_steps": 1},
        "online": {"eval_every": 20}, "logging": {"every": 5}, "strategies": {"finetune": {"lr": 0.05}}}
    outcome = run_experiment(validate_experiment(raw, "test"), tmp_path, quiet=True, report=False)
    (result,) = outcome.results
    correct, tasks = result.online["correct"], result.online["task"]
    rows = _rows(tmp_path / "logs" / "finetune-seed0.csv")
    accuracy = [(int(r["step"]), int(r["task"]), float(r["value"])) for r in rows if r["tag"] == "online/accuracy"]
    assert accuracy == [(d, int(tasks[d - 1]), pytest.approx(correct[d - 5:d].mean(), abs=1e-12))
                        for d in range(5, len(correct) + 1, 5)]
    assert sum(r["tag"] == "online/loss" for r in rows) == len(accuracy)   # what finetune's observe returns
    evals = [(int(r["step"]), float(r["value"])) for r in rows if r["tag"] == "eval/accuracy_k0"]
    points = result.online["eval_batches"]
    assert evals == [(b, pytest.approx(result.acc[h, :, 0].mean(), abs=1e-12)) for h, b in enumerate(points)]


def test_lamaml_logs_the_mean_of_its_learned_rates():
    import scenarios
    import strategies

    stream = scenarios.build("split-digits", {"num_tasks": 1}, seed=0)
    lamaml = strategies.build("lamaml", {"alpha_init": 0.25})
    lamaml.setup(strategies.build_model("mlp", {"hidden": [4]}, stream.spec), stream.spec, "cpu")
    assert {k: float(v) for k, v in lamaml.log_scalars().items()} == {"lr_mean": 0.25, "lr_zero_fraction": 0.0}
    next(iter(lamaml.alpha.values())).fill_(-1.0)      # a rate below zero steps by max(0, alpha) = 0
    total = sum(a.numel() for a in lamaml.alpha.values())
    first = next(iter(lamaml.alpha.values())).numel()
    assert float(lamaml.log_scalars()["lr_zero_fraction"]) == pytest.approx(first / total)


# -- the [logging] table -------------------------------------------------------------------------

@pytest.mark.parametrize("table, message", [
    ('loggers = ["csv", "wandb"]', "logging.loggers.1: must be one of 'csv' or 'tensorboard', got 'wandb'"),
    ('loggers = ["csv", "csv"]', "logging.loggers: must not repeat a logger"),
    ("every = 0", "logging.every: must be > 0"),
    ("interval = 3", "logging.interval: unknown key (valid keys: loggers, every)"),
])
def test_a_bad_logging_table_is_refused_with_its_field_path(tmp_path, capsys, table, message):
    exp = write_experiment(tmp_path, logged_experiment(["csv"]).replace('loggers = ["csv"]\nevery = 4', table))
    code = cli.main(["run", str(exp), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tensorboard_without_its_package_is_a_clear_exit_2(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real(name, *a))
    exp = write_experiment(tmp_path, logged_experiment(["tensorboard"]))
    code = cli.main(["run", str(exp), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "logging.loggers: the tensorboard logger needs the tensorboard package" in err
    assert "pip install 'lifelong[tensorboard]'" in err and not (tmp_path / "out").exists()


def test_no_loggers_writes_no_logs_and_overwrite_removes_old_ones(tmp_path):
    from simulator.config import load_experiment
    from simulator.experiment import run_experiment

    exp = write_experiment(tmp_path, logged_experiment([]))
    experiment = load_experiment(exp, ["strategies.maml.meta_iterations=2"])
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "stale-seed0.csv").write_text("x\n")
    run_experiment(experiment, out, quiet=True, overwrite=True, report=False)
    assert not (out / "logs").exists()
    assert json.loads((out / "config.json").read_text())["logging"] == {"loggers": [], "every": 4}
