"""No fixed overhead on the light commands: `lifelong --help` and `lifelong list` load no heavy library.

`list` describes every strategy's options, which live in modules that import torch; its text is
cached by a digest of the sources it is rendered from (simulator.cli.cached_list).
"""

import os
import subprocess
import sys

import pytest

from simulator import cli

HEAVY = ("torch", "avalanche", "matplotlib", "pydantic", "numpy", "sklearn")


MAIN = f"""
import sys
from simulator.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --help
    pass
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}), file=sys.stderr)
"""


def _python(cache, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` with ``args`` in a fresh interpreter whose cache folder is ``cache``."""
    env = {**os.environ, "LIFELONG_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def _loaded(proc: subprocess.CompletedProcess) -> str:
    """The heavy modules the process had imported at its end, as MAIN prints them."""
    return proc.stderr.rpartition("LOADED ")[2].strip()


def test_importing_the_cli_and_the_package_loads_no_heavy_library(tmp_path):
    code = f"import sys, simulator, simulator.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    assert _python(tmp_path, code).stdout.strip() == "[]"


def test_help_loads_no_heavy_library(tmp_path):
    proc = _python(tmp_path, MAIN, "--help")
    assert "usage: lifelong" in proc.stdout and _loaded(proc) == "[]"


def test_list_renders_once_then_reads_its_cache_without_torch(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "list.txt").write_text("0" * 64 + "\nstale text of other sources")
    first = _python(cache, MAIN, "list")    # a stale cache: rendered afresh and replaced
    assert "torch" in _loaded(first) and "stale text" not in first.stdout and "  finetune: " in first.stdout
    key, _, text = (cache / "list.txt").read_text().partition("\n")
    assert key != "0" * 64 and text + "\n" == first.stdout

    second = _python(cache, MAIN, "list")   # a current cache: the same text, byte for byte, and no torch
    assert second.stdout == first.stdout and _loaded(second) == "[]"

    (cache / "list.txt").write_text(f"{key}\ndoctored")  # proof that the text comes from the cache
    assert _python(cache, MAIN, "list").stdout == "doctored\n"


def test_a_process_that_imported_the_registries_renders_the_list_itself(tmp_path, monkeypatch):
    import strategies  # noqa: F401 - imported: rendering is cheap, and sees entries registered here

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    (tmp_path / "list.txt").write_text(f"{cli._list_key()}\ndoctored")
    assert cli.cached_list() == cli.list_command()


@pytest.mark.parametrize("env", [{"LIFELONG_CACHE": "~/c"}, {"XDG_CACHE_HOME": "/x"}, {}])
def test_the_list_cache_lives_in_the_data_cache_folder(env, monkeypatch):
    from scenarios.data import cache_dir

    for name in ("LIFELONG_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli._cache_dir() == cache_dir()
