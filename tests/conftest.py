"""Shared fixtures: where the real data files are, a private cache for decoded data, a user's module
in the current directory, and an online run stopped mid-stream and resumed."""

import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root for tests: ``$LIFELONG_DATA``, else ``<repo>/../shared/data`` (see its README)."""
    root = Path(os.environ.get("LIFELONG_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"real data files not found at {root}: set LIFELONG_DATA to a folder holding "
                    f"mnist/, fashion-mnist/ and omniglot/ (or run `lifelong data download NAME`)")
    return root


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Decoded-data caches go to a fresh folder per test session (never the user's ~/.cache), so
    the tests also cover a cold cache; set ``$LIFELONG_CACHE`` to reuse a warm one."""
    if os.environ.get("LIFELONG_CACHE"):
        yield Path(os.environ["LIFELONG_CACHE"])
        return
    folder = tmp_path_factory.mktemp("lifelong-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFELONG_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def private_signing_key(tmp_path_factory):
    """Checkpoint signing keys (strategies/avalanche.py) go to a fresh folder, never the user's ~."""
    folder = tmp_path_factory.mktemp("lifelong-key")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFELONG_KEY_DIR", str(folder))
        yield folder


@pytest.fixture
def module_in_cwd(tmp_path, monkeypatch):
    """``module_in_cwd(source, prefix)``: writes ``source`` as a module ``<prefix>_<12 hex digits>``
    in ``tmp_path``, makes ``tmp_path`` the current directory (where a "module:function" name in an
    experiment file is imported from) and returns the module's name. The name is new in every test,
    so no module cached by another test answers for it; ``sys.path``, which the loader extends by
    the current directory, and the current directory are restored after the test."""
    def write(source: str, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the current directory
        return name

    return write


class StopAfterBatches:
    """A progress hook for ``run_online`` that requests a stop (as SIGINT would) once ``n``
    online batches are done; the runner then checkpoints and raises ``Interrupted``."""

    def __init__(self, stop, n: int):
        self.stop, self.n = stop, n

    def online_start(self, done: int, length: int) -> None:
        pass

    def online_step(self, done: int, correct) -> None:
        if done == self.n:
            self.stop.requested = True

    def task_loop(self, loop, task: int, name: str) -> None:
        pass

    def step(self, loop) -> None:
        pass


class StopInsideTask:
    """A progress hook for ``run`` that requests a stop (as SIGINT would) at iteration ``position``
    of task ``task``'s learn loop; the runner then checkpoints mid-task and raises ``Interrupted``."""

    def __init__(self, stop, task: int, position: int):
        self.stop, self.task, self.position, self.current = stop, task, position, None

    def task_loop(self, loop, task: int, name: str) -> None:
        self.current = task

    def step(self, loop) -> None:
        if self.current == self.task and loop.position == self.position:
            self.stop.requested = True


@pytest.fixture
def stop_inside_task():
    """``stop_inside_task(stop, task, position)``: a :class:`StopInsideTask` hook."""
    return StopInsideTask


@pytest.fixture
def stop_after_batches():
    """``stop_after_batches(stop, n)``: a :class:`StopAfterBatches` hook."""
    return StopAfterBatches


@pytest.fixture
def interrupted_online_run(tmp_path):
    """``interrupted_online_run(stream, fresh, settings, online, batches)``: ``run_online`` of a fresh
    ``(strategy, model)`` from ``fresh()`` on ``stream`` (seed 0), three times: uninterrupted; stopped
    as by Ctrl-C after ``batches`` online batches, which must raise ``Interrupted`` ("stopped after
    batch <batches>") and leave its checkpoint in ``tmp_path``; resumed from that checkpoint. Returns
    the uninterrupted and the resumed results, for the test to compare."""
    def run(stream, fresh, settings, online, batches: int):
        from simulator.online import run_online
        from simulator.runner import Interrupted, StopRequest

        clean = run_online(stream, *fresh(), seed=0, settings=settings, online=online)
        checkpoint, stop = tmp_path / "ckpt.pt", StopRequest()
        with pytest.raises(Interrupted, match=f"stopped after batch {batches}"):
            run_online(stream, *fresh(), seed=0, settings=settings, online=online, checkpoint=checkpoint,
                       identity={"test": 1}, stop=stop, progress=StopAfterBatches(stop, batches))
        resumed = run_online(stream, *fresh(), seed=0, settings=settings, online=online, checkpoint=checkpoint,
                             identity={"test": 1}, resume=True)
        return clean, resumed

    return run
