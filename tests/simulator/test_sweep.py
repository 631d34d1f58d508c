"""Sweeps: expansion, the results database, killed and re-run sweeps, failures, backends."""

import importlib.util
import json

import numpy as np
import pytest

from experiments import ONE_EPOCH, experiment_toml, write_experiment  # tests/simulator/experiments.py
from kill_switch import kill_after_checkpoint  # tests/simulator/kill_switch.py

from simulator import cli
from simulator.config import ConfigError
from simulator.store import ResultsDB
from simulator.sweep import load_sweep, run_sweep

SWEEP = experiment_toml("grid", seeds=[0, 1], evaluation={"episodes": 3, "adapt_steps": 1},
                        strategies={"finetune": ONE_EPOCH, "joint": ONE_EPOCH},
                        sweep={"strategies.finetune.lr": [0.05, 0.1]})


def sweep_file(tmp_path, text=SWEEP):
    """tmp_path/sweep.toml holding ``text``."""
    return write_experiment(tmp_path, text, "sweep.toml")


def outcomes(out_dir):
    """Per trial id: status, metrics and the tensors' bytes."""
    db = ResultsDB(out_dir / "results.db")
    try:
        status = {r["trial_id"]: (r["status"], r["error"]) for r in db.runs()}
        values = {}
        for row in db.metrics():
            values.setdefault(row["trial_id"], {})[(row["k"], row["name"])] = row["value"]
    finally:
        db.close()
    tensors = {}
    for trial in status:
        path = out_dir / "trials" / trial / "tensors.npz"
        if path.exists():
            with np.load(path) as data:
                tensors[trial] = {k: data[k].tobytes() for k in data.files}
    return status, values, tensors


def test_expansion_and_trial_identity(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path))
    # finetune: 2 learning rates x 2 seeds; joint does not depend on finetune.lr: 2 seeds, once
    assert sorted((t.strategy, t.seed, json.dumps(t.point)) for t in sweep.trials) == [
        ("finetune", 0, '{"strategies.finetune.lr": 0.05}'), ("finetune", 0, '{"strategies.finetune.lr": 0.1}'),
        ("finetune", 1, '{"strategies.finetune.lr": 0.05}'), ("finetune", 1, '{"strategies.finetune.lr": 0.1}'),
        ("joint", 0, "{}"), ("joint", 1, "{}")]
    again = load_sweep(sweep_file(tmp_path))
    assert [t.id for t in sweep.trials] == [t.id for t in again.trials]
    t = sweep.trials[0]
    assert list(t.config["strategies"]) == ["finetune"] and t.config["seeds"] == [0]
    same_config_other_seed = [u for u in sweep.trials if u.point == t.point and u.strategy == t.strategy]
    assert len({u.config_hash for u in same_config_other_seed}) == 1


def test_bad_grid_points_name_the_point(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep point strategies.finetune.lr=-1: strategies.finetune.lr: must be > 0"):
        load_sweep(sweep_file(tmp_path, SWEEP.replace("[0.05, 0.1]", "[0.05, -1]")))
    with pytest.raises(ConfigError, match="sweep: must be a table of field paths to non-empty lists"):
        load_sweep(sweep_file(tmp_path, SWEEP.replace("[0.05, 0.1]", "[]")))


def test_run_refuses_a_sweep_file(tmp_path, capsys):
    assert cli.main(["run", str(sweep_file(tmp_path))]) == 2
    assert "sweep: this file declares a sweep: run it with `lifelong sweep`" in capsys.readouterr().err


def test_killed_sweep_skips_finished_trials_and_ends_the_same(tmp_path, capsys):
    path = sweep_file(tmp_path)
    sweep = load_sweep(path)
    clean = run_sweep(sweep, tmp_path / "clean", quiet=True)
    assert (clean.skipped, clean.ran, clean.failed) == (0, 6, [])

    killed = tmp_path / "killed"
    # 2 tasks per trial: 2 trials finish, the third is killed after its first task
    kill_after_checkpoint(5, ["sweep", str(path), "--out", str(killed), "--quiet"], tmp_path)
    status, _, _ = outcomes(killed)
    # the killed trial stays `running` (its driver died), the ones not started are `pending`
    assert sorted(s for s, _ in status.values()) == ["done", "done", "pending", "pending", "pending", "running"]
    assert len(list(killed.glob("trials/*/checkpoints/*.pt"))) == 1     # the interrupted trial

    again = run_sweep(load_sweep(path), killed, quiet=True)
    assert (again.skipped, again.ran) == (2, 4)        # finished trials are not run again
    assert outcomes(killed) == outcomes(tmp_path / "clean")
    third = run_sweep(load_sweep(path), killed, quiet=True)
    assert (third.skipped, third.ran) == (6, 0)


def test_a_diverging_trial_fails_and_the_others_complete(tmp_path, capsys):
    path = sweep_file(tmp_path, SWEEP.replace("[0.05, 0.1]", "[0.05, 1e30]"))
    code = cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "trials: 6 in all, 0 already finished, 6 run now, 2 failed" in captured.out
    status, values, _ = outcomes(tmp_path / "out")
    failed = {t: e for t, (s, e) in status.items() if s == "failed"}
    assert len(failed) == 2 and sum(s == "done" for s, _ in status.values()) == 4
    for error in failed.values():
        assert "strategy 'finetune' diverged on task 'digits 0-1' by step" in error
    assert all(t in values for t, (s, _) in status.items() if s == "done")
    # A failure of the trial itself is not retried, and still counts (exit 1) on a re-run.
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "trials: 6 in all, 6 already finished, 0 run now, 2 failed\n" in captured.out
    assert captured.err.count("diverged on task") == 2 and "retried" not in captured.err
    assert outcomes(tmp_path / "out")[0] == status
    db = ResultsDB(tmp_path / "out" / "results.db")
    assert {r["trial_id"]: r["failure"] for r in db.runs() if r["status"] == "failed"} == dict.fromkeys(failed, "trial")
    db.close()
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| strategies.finetune.lr=1e+30 | finetune | 0 | 2 |" in summary
    # CSV export of the database
    assert cli.main(["export", str(tmp_path / "out")]) == 0
    header, *rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert header == "trial_id,strategy,seed,strategies.finetune.lr,k,metric,value" and len(rows) == 4 * 2 * 10


def test_process_pool_is_bit_identical_to_one_process(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path))
    run_sweep(sweep, tmp_path / "one", workers=1, quiet=True)
    run_sweep(sweep, tmp_path / "pool", workers=2, quiet=True)
    one, pool = outcomes(tmp_path / "one"), outcomes(tmp_path / "pool")
    assert len(one[2]) == 6 and one == pool


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'lifelong[ray]'; .ci/run installs it)")
def test_ray_backend_matches_the_local_backend(tmp_path):
    text = SWEEP.replace("seeds = [0, 1]", "seeds = [0]").replace(
        "[sweep]\n", "[strategies.other]\nstrategy = \"finetune\"\nepochs = 2\n\n[sweep]\n")
    sweep = load_sweep(sweep_file(tmp_path, text))
    assert len(sweep.trials) == 4
    run_sweep(sweep, tmp_path / "local", workers=1, quiet=True)
    result = run_sweep(sweep, tmp_path / "ray", workers=2, backend="ray", quiet=True)
    assert result.ran == 4 and not result.failed
    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")
