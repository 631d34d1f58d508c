"""Run directories a researcher can trust (issue 12): one experiment per directory, one
writer at a time, commits that a kill cannot tear, checkpoints that cannot run code or be
used by the wrong run, and interruptions inside a long task that resume bit-identically."""

import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from experiments import ONE_EPOCH, experiment_toml, split_digits, write_experiment  # tests/simulator/experiments.py
from kill_switch import kill_after_checkpoint  # tests/simulator/kill_switch.py

from simulator import cli
from simulator.checkpoint import FORMAT_VERSION
from simulator.lock import DirectoryLock
from simulator.rundir import load_tensors

REPO = Path(__file__).resolve().parents[2]

EXPERIMENT = experiment_toml("trusted", scenario=split_digits(3),
                             strategies={"finetune": ONE_EPOCH, "joint": ONE_EPOCH})


def long_task(**strategies) -> str:
    """The experiment "long-task": split-digits in 2 tasks learned by ``strategies`` (label: table),
    each sized by the test (how long a task's loop runs)."""
    return experiment_toml("long-task", strategies=strategies)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The experiment file, its uninterrupted run, and a run of it killed after the 4th
    checkpoint (finetune finished, joint inside its run); tests copy what they change."""
    base = tmp_path_factory.mktemp("trust")
    exp = write_experiment(base, EXPERIMENT)
    assert cli.main(["run", str(exp), "--out", str(base / "clean"), "--quiet"]) == 0
    kill_after_checkpoint(4, ["run", str(exp), "--out", str(base / "killed"), "--quiet"], base)
    return exp, base / "clean", base / "killed"


def _killed_copy(prepared, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(prepared[2], out)
    return out


def _main(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["run", *map(str, argv)])
    return code, capsys.readouterr().err


def _same_tensors(a: Path, b: Path) -> bool:
    x, y = load_tensors(a), load_tensors(b)
    return sorted(x) == sorted(y) and all(x[k].tobytes() == y[k].tobytes() for k in x)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# -- finding 1 and 6: one experiment per directory -----------------------------------------------

def test_another_experiment_is_refused_and_overwrite_never_mixes_results(prepared, tmp_path, capsys):
    exp, out = prepared[0], _killed_copy(prepared, tmp_path)            # finetune done, joint inside
    lr = "strategies.finetune.lr=0.02"
    assert _main(capsys, exp, "--out", tmp_path / "clean", "--set", lr, "--quiet")[0] == 0
    before = _snapshot(out)

    code, err = _main(capsys, exp, "--out", out, "--set", lr)          # a fresh run of another config
    assert code == 2 and "holds another experiment" in err and "strategies.finetune.lr (0.1 there, 0.02 now)" in err
    assert "--overwrite" in err and "Traceback" not in err
    code, err = _main(capsys, exp, "--out", out, "--set", lr, "--resume")
    assert code == 2 and "holds another experiment" in err
    assert _snapshot(out) == before                                     # refused: nothing touched

    kill_after_checkpoint(1, ["run", str(exp), "--out", str(out), "--set", lr, "--overwrite", "--quiet"], tmp_path)
    assert "results.json" not in os.listdir(out)                        # the old results are gone
    assert _main(capsys, exp, "--out", out, "--set", lr, "--resume", "--quiet")[0] == 0
    assert _same_tensors(tmp_path / "clean", out)


def test_the_same_experiment_again_needs_resume_or_overwrite(prepared, tmp_path, capsys):
    exp, out = prepared[0], tmp_path / "out"
    shutil.copytree(prepared[1], out)
    code, err = _main(capsys, exp, "--out", out)
    assert code == 2 and "already holds results of this experiment (2 finished run(s)" in err
    assert _main(capsys, exp, "--out", out, "--overwrite", "--quiet")[0] == 0
    code, err = _main(capsys, exp, "--out", out, "--resume", "--overwrite")
    assert code == 2 and "give one" in err


def test_a_folder_that_is_not_a_run_directory_is_refused(tmp_path, capsys):
    exp = write_experiment(tmp_path, EXPERIMENT)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, err = _main(capsys, exp, "--out", out)
    assert code == 2 and "is not a run directory (it holds thesis.tex)" in err
    assert sorted(os.listdir(out)) == [".lock", "thesis.tex"]


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    exp = write_experiment(tmp_path, long_task(maml={"meta_iterations": 100000}))
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "simulator.cli", "run", str(exp), "--out", str(out), "--quiet"],
                             cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").exists():
            assert time.monotonic() < deadline and child.poll() is None, child.stderr.read() if child.poll() else ""
            time.sleep(0.1)
        start = time.monotonic()
        code, err = _main(capsys, exp, "--out", out, "--resume")
        assert code == 2 and f"being written by another lifelong process (pid {child.pid})" in err
        assert time.monotonic() - start < 10
    finally:
        child.kill()
        child.wait()
    # the kernel released the dead holder's lock: the directory is usable again
    with DirectoryLock(out):
        pass


# -- finding 2 and the commit protocol: a kill at every file operation ---------------------------

def _killing_at(n: int):
    """Patch the file operations that change what a directory shows (renames, deletions) so
    that the n-th one SIGKILLs this process just before it happens."""
    count = [0]

    def wrap(original):
        def operation(*args, **kwargs):
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)
        return operation

    os.replace = wrap(os.replace)
    os.unlink = wrap(os.unlink)
    os.rmdir = wrap(os.rmdir)
    Path.unlink = wrap(Path.unlink)
    Path.rmdir = wrap(Path.rmdir)


def test_a_kill_at_any_file_operation_leaves_a_resumable_reportable_directory(tmp_path, capsys):
    from simulator.report import write_report

    exp = write_experiment(tmp_path, EXPERIMENT.replace("num_tasks = 3", "num_tasks = 2"))
    clean = tmp_path / "clean"
    assert _main(capsys, exp, "--out", clean, "--quiet")[0] == 0
    n, killed_at = 0, []
    while True:
        n += 1
        out = tmp_path / f"killed-{n}"
        pid = os.fork()
        if pid == 0:  # the child runs, and dies at its n-th file operation
            code = 3
            try:
                _killing_at(n)
                sys.stderr = open(os.devnull, "w")
                code = cli.main(["run", str(exp), "--out", str(out), "--quiet"])
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0
            break
        killed_at.append(n)
        if (out / "results.json").exists():   # report works on whatever the kill left
            write_report([out], tmp_path / f"report-{n}", draw=False)
        code, err = _main(capsys, exp, "--out", out, "--resume", "--quiet")
        assert code == 0, (n, err)
        assert _same_tensors(clean, out), n
        assert not list(out.rglob("*.tmp")) and not (out / "checkpoints").exists(), n
        assert n < 200
    assert len(killed_at) > 20   # every checkpoint, every commit file, every clean-up was a kill point


# -- finding 3: checkpoints cannot run code ------------------------------------------------------

class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _crafted_files(checkpoint: Path, marker: Path) -> dict[str, bytes]:
    evil = pickle.dumps({"format": 1, "next_task": 1, "strategy": _Payload(marker)})
    buffer = io.BytesIO()
    torch.save({"next_task": 1, "strategy": _Payload(marker)}, buffer)
    body = buffer.getvalue()
    header = json.loads(checkpoint.read_bytes().partition(b"\n")[0])
    forged = {**header, "sha256": hashlib.sha256(body).hexdigest()}   # an attacker can compute the hash
    return {"plain pickle": evil, "torch.save pickle": body,
            "forged header": json.dumps(forged, sort_keys=True).encode() + b"\n" + body}


@pytest.mark.parametrize("kind", ["plain pickle", "torch.save pickle", "forged header"])
def test_a_crafted_checkpoint_is_refused_and_runs_no_code(prepared, tmp_path, capsys, kind):
    exp, out = prepared[0], _killed_copy(prepared, tmp_path)
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    marker = tmp_path / "pwned"
    checkpoint.write_bytes(_crafted_files(checkpoint, marker)[kind])
    code, err = _main(capsys, exp, "--out", out, "--resume")
    assert code == 2 and f"checkpoint {checkpoint}" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_crafted_avalanche_state_is_not_unpickled(tmp_path):
    import strategies
    from strategies.signing import sign

    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Payload(marker))
    strategy = strategies.build("avalanche.Naive", {"epochs": 1})
    with pytest.raises(ValueError, match="not signed with this user's key"):
        strategy.load_state_dict({"avalanche": blob, "avalanche_mac": "0" * 64})
    with pytest.raises(ValueError, match="not signed"):
        strategy.load_state_dict({"avalanche": blob})
    assert not marker.exists()
    assert sign(blob) == sign(blob) and sign(blob) != sign(blob + b"x")


# -- finding 8: damaged files, stray temporaries, stale checkpoints ------------------------------

def _damage(out: Path, what: str, tmp_path: Path) -> str:
    """Damage the directory of a killed run; return the file the message must name."""
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    data = checkpoint.read_bytes()
    if what == "truncated checkpoint":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif what == "flipped byte in checkpoint":
        checkpoint.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    elif what == "garbage checkpoint":
        checkpoint.write_bytes(os.urandom(3000))
    elif what == "empty checkpoint":
        checkpoint.write_bytes(b"")
    elif what == "checkpoint of another seed":
        header, _, body = data.partition(b"\n")
        fields = json.loads(header)
        fields["identity"]["seed"] = 7
        checkpoint.write_bytes(json.dumps(fields, sort_keys=True).encode() + b"\n" + body)
    elif what == "old-format checkpoint":
        buffer = io.BytesIO()
        torch.save({"format": 1, "next_task": 1}, buffer)
        checkpoint.write_bytes(buffer.getvalue())
    elif what == "checkpoint is a directory":
        checkpoint.unlink()
        checkpoint.mkdir()
    elif what == "garbage results.json":
        (out / "results.json").write_text("{ not json")
        return str(out / "results.json")
    elif what == "results.json of another experiment":
        doc = json.loads((out / "results.json").read_text())
        (out / "results.json").write_text(json.dumps({**doc, "config_hash": "0" * 64}))
        return str(out / "results.json")
    elif what == "truncated tensors.npz":
        (out / "tensors.npz").write_bytes((out / "tensors.npz").read_bytes()[:100])
        return str(out / "tensors.npz")
    elif what == "garbage config.json":
        (out / "config.json").write_bytes(b"\xff\xfe\x00garbage")
        return str(out / "config.json")
    return str(checkpoint)


DAMAGES = ["truncated checkpoint", "flipped byte in checkpoint", "garbage checkpoint", "empty checkpoint",
           "checkpoint of another seed", "old-format checkpoint", "checkpoint is a directory",
           "garbage results.json", "results.json of another experiment", "truncated tensors.npz",
           "garbage config.json"]


@pytest.mark.parametrize("what", DAMAGES)
def test_damaged_run_files_are_refused_naming_the_file(prepared, tmp_path, capsys, what):
    exp, out = prepared[0], _killed_copy(prepared, tmp_path)
    named = _damage(out, what, tmp_path)
    before = _snapshot(out)
    code, err = _main(capsys, exp, "--out", out, "--resume")
    assert code == 2, err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before                                    # refused before touching anything
    capsys.readouterr()
    code = cli.main(["report", str(out), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err


def test_resume_removes_stray_temporaries_and_stale_checkpoints(prepared, tmp_path, capsys):
    from simulator.rundir import checkpoint_path

    exp, clean, out = prepared[0], prepared[1], _killed_copy(prepared, tmp_path)
    (out / ".results.json.abc123.tmp").write_text("half")
    (out / "checkpoints" / ".x.pt.def456.tmp").write_text("half")
    stale = checkpoint_path(out, "finetune", 0)               # finetune finished: its checkpoint is stale
    stale.write_bytes(b"left over")
    assert _main(capsys, exp, "--out", out, "--resume", "--quiet")[0] == 0
    assert not list(out.rglob("*.tmp")) and not stale.exists()
    assert _same_tensors(clean, out)


# -- finding 4: interrupting a long task ---------------------------------------------------------

def _interrupt_mid_task(exp: Path, out: Path, sig: int, extra=()) -> str:
    """Start ``lifelong run``, send ``sig`` once it logs progress inside a task; its stderr."""
    child = subprocess.Popen([sys.executable, "-m", "simulator.cli", "run", str(exp), "--out", str(out),
                              "--log-every", "0.2", *extra], cwd=REPO, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in child.stderr:
        lines.append(line)
        if "iteration" in line:
            child.send_signal(sig)
            break
    _, rest = child.communicate(timeout=120)
    assert child.returncode == 130, "".join(lines) + rest
    return "".join(lines) + rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_long_task_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path, capsys, sig):
    exp = write_experiment(tmp_path, long_task(maml={"meta_iterations": 600}))
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _main(capsys, exp, "--out", clean, "--quiet")[0] == 0
    log = _interrupt_mid_task(exp, out, sig)
    assert "maml seed 0, task 1/2 (digits 0-1): iteration " in log and "about" in log   # progress in a log
    assert "stopped inside task 0 ('digits 0-1') at iteration" in log and "Traceback" not in log
    assert len(list((out / "checkpoints").glob("*.pt"))) == 1
    assert _main(capsys, exp, "--out", out, "--resume", "--quiet")[0] == 0
    assert _same_tensors(clean, out)


@pytest.mark.parametrize("experiment", ["finetune", "joint", "protomemory", "reptile"])
def test_checkpoints_after_every_iteration_resume_bit_identical(tmp_path, capsys, experiment):
    """Every strategy with a task loop: a kill after its 7th checkpoint (inside the first task,
    with a checkpoint after every iteration) resumes to the uninterrupted tensors."""
    tables = {"finetune": {"epochs": 3, "batch_size": 16}, "joint": {"epochs": 2, "reset": True, "batch_size": 16},
              "protomemory": {"meta_iterations": 20, "embedding_dim": 8}, "reptile": {"meta_iterations": 20}}
    exp = write_experiment(tmp_path, long_task(**{experiment: tables[experiment]}))
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _main(capsys, exp, "--out", clean, "--quiet")[0] == 0
    kill_after_checkpoint(7, ["run", str(exp), "--out", str(out), "--quiet", "--checkpoint-every", "1"], tmp_path)
    assert _main(capsys, exp, "--out", out, "--resume", "--quiet", "--checkpoint-every", "3")[0] == 0
    assert _same_tensors(clean, out)


def test_omniglot_maml_interrupted_inside_its_long_task_resumes_bit_identical(tmp_path, capsys, data_root):
    exp = write_experiment(tmp_path, experiment_toml(
        "omniglot-maml", data_root=str(data_root),
        scenario={"name": "omniglot-fewshot", "ways": 5, "shots": 1, "query": 2}, model={"name": "conv4", "filters": 8},
        strategies={"maml": {"meta_iterations": 400, "meta_batch_size": 2, "inner_lr": 0.4}}))
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert _main(capsys, exp, "--out", clean, "--quiet")[0] == 0
    log = _interrupt_mid_task(exp, out, signal.SIGINT)
    assert "task 1/1" in log and "stopped inside task 0" in log
    assert _main(capsys, exp, "--out", out, "--resume", "--quiet")[0] == 0
    assert _same_tensors(clean, out)


def test_checkpoint_format_is_written_as_documented(prepared):
    out = prepared[2]
    (checkpoint,) = (out / "checkpoints").glob("*.pt")
    header, _, body = checkpoint.read_bytes().partition(b"\n")
    fields = json.loads(header)
    assert fields["format"] == FORMAT_VERSION and fields["sha256"] == hashlib.sha256(body).hexdigest()
    assert fields["identity"]["label"] == "joint" and fields["identity"]["seed"] == 0
    assert torch.load(io.BytesIO(body), weights_only=True)["next_task"] == 1


@pytest.mark.parametrize("options, message", [
    (["--checkpoint-every", "0"], "must be > 0, got 0"),
    (["--checkpoint-every", "-3"], "must be > 0, got -3"),
    (["--checkpoint-every", "many"], "'many' is not an integer"),
    (["--checkpoint-minutes", "0"], "must be a finite number > 0, got 0"),
    (["--checkpoint-minutes", "nan"], "must be a finite number > 0, got nan"),
    (["--checkpoint-minutes", "inf"], "must be a finite number > 0, got inf"),
    (["--log-every", "-1"], "must be a finite number > 0, got -1"),
    (["--resume", "--overwrite"], "--resume keeps the results in --out and --overwrite removes them"),
])
def test_bad_checkpoint_and_progress_options_are_refused_and_write_nothing(tmp_path, capsys, options, message):
    exp = write_experiment(tmp_path, EXPERIMENT)
    out = tmp_path / "out"
    try:
        code = cli.main(["run", str(exp), "--out", str(out), *options])
    except SystemExit as exit:  # argparse refuses an option's value itself
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    exp = write_experiment(tmp_path, EXPERIMENT)
    target = tmp_path / "results.txt"
    target.write_text("mine")
    code, err = _main(capsys, exp, "--out", target)
    assert code == 2 and f"cannot write to the output directory {target}" in err
    assert target.read_text() == "mine"
