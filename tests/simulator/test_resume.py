"""Resume after SIGKILL, and failures that must lose no finished result."""

import errno
import json

from experiments import ONE_EPOCH, experiment_toml, split_digits, write_experiment  # tests/simulator/experiments.py
from kill_switch import kill_after_checkpoint  # tests/simulator/kill_switch.py

from simulator import cli, rundir
from simulator.rundir import load_tensors

EXPERIMENT = experiment_toml("resumable", scenario=split_digits(3), model={"hidden": [32]},
                             evaluation={"episodes": 4, "adapt_steps": 2},
                             strategies={"finetune": {"epochs": 1, "optimizer": "adam", "lr": 0.01},
                                         "joint": ONE_EPOCH})


def test_sigkill_after_the_second_task_then_resume_is_bit_identical(tmp_path, capsys):
    exp = write_experiment(tmp_path, EXPERIMENT)
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "clean"), "--quiet"]) == 0
    killed = tmp_path / "killed"
    # finetune writes 3 checkpoints and finishes; joint is killed after its second task
    kill_after_checkpoint(5, ["run", str(exp), "--out", str(killed), "--quiet"], tmp_path)
    assert {r["strategy"] for r in json.loads((killed / "results.json").read_text())["runs"]} == {"finetune"}
    assert len(list((killed / "checkpoints").glob("*.pt"))) == 1
    capsys.readouterr()
    assert cli.main(["run", str(exp), "--out", str(killed), "--resume", "--quiet"]) == 0
    assert "resumed: 1 finished run(s) kept" in capsys.readouterr().err
    clean, resumed = load_tensors(tmp_path / "clean"), load_tensors(killed)
    assert sorted(clean) == sorted(resumed)
    for key in clean:
        assert clean[key].tobytes() == resumed[key].tobytes(), key
    assert not list((killed / "checkpoints").glob("*.pt"))      # removed once the run finished


def test_resume_refuses_another_experiment(tmp_path, capsys):
    exp = write_experiment(tmp_path, EXPERIMENT)
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    capsys.readouterr()
    code = cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--resume", "--set",
                     "strategies.joint.epochs=2"])
    err = capsys.readouterr().err
    assert code == 2 and "holds another experiment" in err and "strategies.joint.epochs (1 there, 2 now)" in err
    assert "--overwrite" in err


def test_unwritable_output_directory_is_a_clear_error(tmp_path, capsys):
    exp = write_experiment(tmp_path, EXPERIMENT)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = cli.main(["run", str(exp), "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"cannot write to the output directory {blocker / 'out'}" in err


def test_full_disk_keeps_the_finished_runs(tmp_path, capsys, monkeypatch):
    exp = write_experiment(tmp_path, EXPERIMENT)
    out = tmp_path / "out"
    real_write, writes = rundir.atomic_write, []

    def filling_disk(path, data):
        # the first run's files are written; then the disk is full
        if path.name == "results.json" and any(p.name == "results.json" for p in writes):
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(path)
        real_write(path, data)

    monkeypatch.setattr(rundir, "atomic_write", filling_disk)
    code = cli.main(["run", str(exp), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())      # still whole, still parseable
    assert [r["strategy"] for r in results["runs"]] == ["finetune"]
    # tensors.npz is committed first, so it may hold the run results.json does not list yet
    assert {"finetune/seed0/acc", "finetune/seed0/loss"} <= set(load_tensors(out))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_a_run_made_on_an_older_version_of_its_stream_family(tmp_path, capsys):
    # The schedule family's version 2 seeds its later parts differently: a directory written by
    # version 1 (whose config.json had no stream_version) must not be continued on the new tasks.
    schedule = {"name": "schedule", "parts": [split_digits(2), split_digits(2)]}
    exp = write_experiment(tmp_path, experiment_toml("scheduled", scenario=schedule, model={"hidden": [16]},
                                                     evaluation={"episodes": 2, "adapt_steps": 1},
                                                     strategies={"joint": ONE_EPOCH}))
    out = tmp_path / "out"
    assert cli.main(["run", str(exp), "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["scenario"]["stream_version"] == 2
    del config["scenario"]["stream_version"]                     # as version 1 wrote it
    (out / "config.json").write_text(json.dumps(config, indent=2))
    capsys.readouterr()
    assert cli.main(["run", str(exp), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "scenario.stream_version (None there, 2 now)" in err
    assert "this version of the 'schedule' stream family builds tasks that differ from those its runs" in err
    assert "Traceback" not in err


def test_families_at_version_1_write_no_stream_version(tmp_path):
    exp = write_experiment(tmp_path, EXPERIMENT)
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "stream_version" not in json.loads((tmp_path / "out" / "config.json").read_text())["scenario"]
