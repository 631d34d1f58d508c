"""Shared fixtures: where the real data files are, and a private cache for decoded data."""

import os
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


@pytest.fixture
def stop_after_batches():
    """``stop_after_batches(stop, n)``: a :class:`StopAfterBatches` hook."""
    return StopAfterBatches
