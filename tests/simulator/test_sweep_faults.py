"""Sweeps that survive their parts: a killed worker, a killed driver, Ctrl-C (once and twice),
a full disk, a damaged results.db, failures retried or not, a second driver, and export on
damaged input. Trials misbehave through a user stream function that kills itself, hangs or
ignores SIGTERM in the process that builds its stream; process checks read /proc."""

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import experiment_toml, write_experiment  # tests/simulator/experiments.py

from simulator import cli
from simulator.lock import DirectoryLock
from simulator.store import FAILURE_COLUMN, SCHEMA, ResultsDB
from simulator.sweep import STOP_GRACE, load_sweep

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process checks read /proc")

ROOT = Path(__file__).resolve().parents[2]
QUICK = 5.0   # seconds: a Ctrl-C of trials that need no checkpoint, from signal to exit, on a loaded machine

STREAMS = '''
import os
import signal
import time
from pathlib import Path

import torch
from scenarios import from_tensors


def stream(mode: str = "ok", seed: int = 0):
    """Two tiny tasks. Other modes first write ready-<mode>-<pid> in the current directory, then
    "die": SIGKILL this process, once per file arm-die; "hang": sleep; "stubborn": ignore SIGTERM
    and sleep."""
    if mode == "die":
        try:
            os.rename("arm-die", f"ready-die-{os.getpid()}")   # one process alone wins the file
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    if mode in ("hang", "stubborn"):
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(f"ready-{mode}-{os.getpid()}").touch()
        time.sleep(120)
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for c in range(2):
        y = torch.arange(2 * c, 2 * c + 2).repeat(20)
        x = 0.5 * torch.randn(40, 3, generator=g) + y[:, None].float()
        tasks.append((x, y, x + 0.01, y))
    return from_tensors(tasks, name="blobs")
'''


@pytest.fixture
def streams(module_in_cwd):
    """A module holding ``stream`` in the current directory (tmp_path), under a unique name."""
    return module_in_cwd(STREAMS, "faulty_streams")


def experiment(tmp_path, module, modes, seeds=(0,), epochs=1):
    """tmp_path/faults.toml: the sweep "faults" of finetune over the stream ``module:stream`` in the
    modes ``modes``."""
    return write_experiment(tmp_path, experiment_toml(
        "faults", seeds=list(seeds), scenario={"name": f"{module}:stream"}, strategies={"finetune": {"epochs": epochs}},
        sweep={"scenario.mode": list(modes)}), "faults.toml")


def by_mode(out):
    """(mode, seed) -> (status, failure, error) as results.db has them."""
    db = ResultsDB(out / "results.db")
    try:
        return {(json.loads(r["point"])["scenario.mode"], r["seed"]): (r["status"], r.get("failure"), r["error"])
                for r in db.runs()}
    finally:
        db.close()


def sweep(path, out, workers=1):
    return cli.main(["sweep", str(path), "--out", str(out), "--workers", str(workers), "--quiet"])


# -- processes, from /proc -------------------------------------------------------------------------

def _stat(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid):
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def trial_processes(parent):
    """Live trial processes started by ``parent`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = _stat(entry.name) if entry.name.isdigit() else None
        if stat is not None and stat[0] != "Z" and int(stat[1]) == parent:
            try:
                if b"spawn_main" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def gone(pids, within):
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def start_driver(tmp_path, path, workers):
    """``lifelong sweep`` in a child process, in a session (and process group) of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "sweep", str(path), "--out", str(tmp_path / "out"),
         "--workers", str(workers), "--quiet"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_ready(tmp_path, count, driver, timeout=120.0):
    """Pids of the processes whose stream reached its misbehaviour, once ``count`` did."""
    deadline = time.monotonic() + timeout
    while len(ready := list(tmp_path.glob("ready-*"))) < count:
        if driver.poll() is not None:
            pytest.fail(f"the driver exited with {driver.returncode}: {driver.communicate()[1]}")
        assert time.monotonic() < deadline, "the trials did not start"
        time.sleep(0.1)
    return [int(p.name.rsplit("-", 1)[1]) for p in ready]


@pytest.fixture
def drivers():
    """Driver processes a test started; any still alive at the end is killed with its group."""
    started = []
    yield started
    for driver in started:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


# -- tests -----------------------------------------------------------------------------------------

def test_a_killed_worker_fails_its_trial_alone_and_a_rerun_retries_it(streams, tmp_path, capsys):
    (tmp_path / "arm-die").touch()       # the first "die" trial to build its stream dies
    path, out = experiment(tmp_path, streams, ["ok", "die"], seeds=[0, 1]), tmp_path / "out"
    assert sweep(path, out, workers=2) == 1
    printed = capsys.readouterr()
    assert "trials: 4 in all, 0 already finished, 4 run now, 1 failed (1 to retry: run the same command again)" \
        in printed.out
    assert "failed (retried by the next run): worker process died (signal 9)" in printed.err
    status = by_mode(out)
    failed = [key for key, value in status.items() if value[0] == "failed"]
    assert len(failed) == 1 and failed[0][0] == "die"        # the others went on, in a fresh process too
    assert status.pop(failed[0]) == ("failed", "environment", "worker process died (signal 9)")
    assert set(status.values()) == {("done", None, None)}
    assert trial_processes(os.getpid()) == []

    assert sweep(path, out) == 0
    assert "trials: 4 in all, 3 already finished, 1 run now, 0 failed\n" in capsys.readouterr().out
    assert set(by_mode(out).values()) == {("done", None, None)}


def test_killing_the_driver_kills_its_workers(streams, tmp_path, drivers):
    path = experiment(tmp_path, streams, ["hang"], seeds=[0, 1])
    drivers.append(driver := start_driver(tmp_path, path, workers=2))
    workers = wait_ready(tmp_path, 2, driver)
    assert sorted(workers) == sorted(trial_processes(driver.pid))
    driver.kill()
    driver.wait()
    assert gone(workers, within=3.0)


@pytest.mark.parametrize("workers, to_group", [(2, True), (2, False), (1, True)],
                         ids=["pool-terminal", "pool-driver-only", "in-process"])
def test_ctrl_c_stops_at_once_without_traceback_and_requeues_the_trials(streams, tmp_path, drivers,
                                                                       workers, to_group):
    path = experiment(tmp_path, streams, ["hang"], seeds=[0, 1])
    drivers.append(driver := start_driver(tmp_path, path, workers))
    busy = wait_ready(tmp_path, workers, driver)    # in-process: the driver itself
    assert sorted(s for s, _, _ in by_mode(tmp_path / "out").values()) == sorted(
        ["running"] * workers + ["pending"] * (2 - workers))
    start = time.monotonic()
    (os.killpg if to_group else os.kill)(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert time.monotonic() - start < QUICK
    assert driver.returncode == 130 and "lifelong: interrupted" in err and "Traceback" not in err
    assert {s for s, _, _ in by_mode(tmp_path / "out").values()} == {"pending"}
    assert gone(busy, within=1.0)


def test_ctrl_c_lets_a_training_worker_checkpoint_and_the_next_run_resumes_it(streams, tmp_path, drivers):
    path = experiment(tmp_path, streams, ["ok"], epochs=1000)      # about a second or two per task
    (trial,) = load_sweep(path).trials
    trial_dir = tmp_path / "out" / "trials" / trial.id
    drivers.append(driver := start_driver(tmp_path, path, workers=2))
    deadline = time.monotonic() + 120
    while not (trial_dir / "config.json").exists():   # the runner holds the directory: task 0 begins
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    start = time.monotonic()
    os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert time.monotonic() - start < STOP_GRACE and driver.returncode == 130 and "Traceback" not in err
    assert by_mode(tmp_path / "out") == {("ok", 0): ("pending", None, None)}
    assert any((trial_dir / "checkpoints").iterdir())   # saved on the driver's SIGTERM, before SIGKILL

    assert sweep(path, tmp_path / "out") == 0
    assert sweep(path, tmp_path / "clean") == 0
    resumed, clean = (np.load(d / "trials" / trial.id / "tensors.npz") for d in (tmp_path / "out", tmp_path / "clean"))
    assert {k: resumed[k].tobytes() for k in resumed.files} == {k: clean[k].tobytes() for k in clean.files}


def test_a_second_ctrl_c_does_not_wait_for_workers_that_ignore_sigterm(streams, tmp_path, drivers):
    path = experiment(tmp_path, streams, ["stubborn"], seeds=[0, 1])
    drivers.append(driver := start_driver(tmp_path, path, workers=2))
    workers = wait_ready(tmp_path, 2, driver)
    start = time.monotonic()
    os.killpg(driver.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert time.monotonic() - start < min(QUICK, STOP_GRACE / 2)    # without it: SIGKILL after STOP_GRACE
    assert driver.returncode == 130 and "Traceback" not in err
    assert {s for s, _, _ in by_mode(tmp_path / "out").values()} == {"pending"}
    assert gone(workers, within=1.0)


def test_a_full_disk_under_results_db_is_a_clean_exit_1_and_no_trial_stays_running(streams, tmp_path, capsys,
                                                                                    monkeypatch):
    path, out = experiment(tmp_path, streams, ["ok", "hang"]), tmp_path / "out"
    finish = ResultsDB.finish

    def disk_full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResultsDB, "finish", disk_full)
    assert sweep(path, out, workers=2) == 1        # the ok trial's result cannot be recorded
    err = capsys.readouterr().err
    assert err.startswith(f"lifelong: cannot update the results database {out / 'results.db'}: database or disk "
                          f"is full.") and err.count("\n") == 1
    assert {s for s, _, _ in by_mode(out).values()} == {"pending"}
    assert trial_processes(os.getpid()) == []      # the hanging trial was stopped

    monkeypatch.setattr(ResultsDB, "finish", finish)
    assert sweep(experiment(tmp_path, streams, ["ok"]), out) == 0
    assert "trials: 1 in all, 0 already finished, 1 run now, 0 failed\n" in capsys.readouterr().out
    assert by_mode(out)[("ok", 0)] == ("done", None, None)


def test_a_trial_that_meets_a_full_disk_is_retried_by_the_next_run(streams, tmp_path, capsys, monkeypatch):
    import simulator.experiment as experiment_module

    path, out = experiment(tmp_path, streams, ["ok"]), tmp_path / "out"
    run_experiment = experiment_module.run_experiment

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(experiment_module, "run_experiment", disk_full)
    assert sweep(path, out) == 1
    assert "trials: 1 in all, 0 already finished, 1 run now, 1 failed (1 to retry" in capsys.readouterr().out
    assert by_mode(out) == {("ok", 0): ("failed", "environment", "OSError: [Errno 28] No space left on device")}

    monkeypatch.setattr(experiment_module, "run_experiment", run_experiment)
    assert sweep(path, out) == 0
    assert "trials: 1 in all, 0 already finished, 1 run now, 0 failed\n" in capsys.readouterr().out
    assert by_mode(out) == {("ok", 0): ("done", None, None)}


def test_a_results_db_of_an_earlier_version_gains_failure_kinds_and_its_failures_are_retried(streams, tmp_path,
                                                                                             capsys):
    path, out = experiment(tmp_path, streams, ["ok"], seeds=[0, 1]), tmp_path / "out"
    out.mkdir()
    old_schema = SCHEMA.replace(f",\n    {FAILURE_COLUMN}", "")
    assert old_schema != SCHEMA
    with sqlite3.connect(out / "results.db") as conn:
        conn.executescript(old_schema)
        for t, status, error in zip(load_sweep(path).trials, ["done", "failed"], [None, "OSError: disk full"]):
            conn.execute("INSERT INTO runs (trial_id, config_hash, point, strategy, seed, status, error) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (t.id, t.config_hash, json.dumps(t.point), t.strategy, t.seed, status, error))
    conn.close()
    assert cli.main(["export", str(out)]) == 0      # a reader leaves an old database as it is
    assert sweep(path, out) == 0
    assert "trials: 2 in all, 1 already finished, 1 run now, 0 failed\n" in capsys.readouterr().out
    assert by_mode(out) == {("ok", 0): ("done", None, None), ("ok", 1): ("done", None, None)}


@pytest.mark.parametrize("damage", ["garbage", "foreign"])
def test_a_damaged_results_db_is_refused_naming_it_and_left_as_it_was(streams, tmp_path, capsys, damage):
    path, out = experiment(tmp_path, streams, ["ok"]), tmp_path / "out"
    out.mkdir()
    db = out / "results.db"
    if damage == "garbage":
        db.write_bytes(b"not a database at all\n" * 200)
    else:   # another program's SQLite file
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE runs (name TEXT)")
        conn.close()
    before = db.read_bytes()
    for argv in (["sweep", str(path), "--out", str(out), "--quiet"], ["export", str(out)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"lifelong: error: {db} is damaged or not a results database" in err
        assert "Traceback" not in err and err.count("\n") == 1
    assert db.read_bytes() == before
    assert not (out / "metrics.csv").exists()


def test_export_reports_a_csv_path_it_cannot_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    db = ResultsDB(out / "results.db")
    db.mark("t1", config_hash="abc", point={}, strategy="finetune", seed=0, status="running")
    db.finish("t1", status="done", error=None, seconds=1.0, versions={}, metrics={0: {"final_accuracy": 0.5}})
    db.close()
    for csv_path in (tmp_path / "missing" / "metrics.csv", out):
        assert cli.main(["export", str(out), "--out", str(csv_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"lifelong: cannot write {csv_path}: ") and "Traceback" not in err
    assert cli.main(["export", str(out)]) == 0
    assert (out / "metrics.csv").read_text().splitlines()[1] == "t1,finetune,0,0,final_accuracy,0.5"


def test_a_second_driver_on_the_same_directory_is_refused(streams, tmp_path, capsys):
    path, out = experiment(tmp_path, streams, ["ok"]), tmp_path / "out"
    with DirectoryLock(out):
        assert sweep(path, out) == 2
    assert f"is being written by another lifelong process (pid {os.getpid()})" in capsys.readouterr().err
    assert not (out / "results.db").exists()


def test_a_trial_process_leaves_when_its_parent_is_gone_even_without_prctl(tmp_path):
    # The fallback alone: a grandchild watching the middle process, which exits.
    middle = textwrap.dedent("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c",
            "import os, sys; from simulator.sweep import _watch_parent; print(os.getpid(), flush=True); "
            "_watch_parent(int(sys.argv[1]))", str(__import__("os").getpid())], stdout=subprocess.PIPE)
        print(child.stdout.readline().decode().strip(), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", middle], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    orphan = int(done.stdout)
    assert gone([orphan], within=3.0)
