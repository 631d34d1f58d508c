"""Every example of the documentation runs: the README's and those of docs/**/*.md.

- The README's Python example runs, and its test command is the one CI runs (.ci/run).
- Every ```python block of a docs page runs, the page's blocks in order in one namespace, in a
  fresh working folder holding a link to configs/ (a page reads like a notebook).
- Every ```toml block is validated as an experiment file: a block with a [scenario] and
  strategies is a whole file (simulator.config.load_experiment, or simulator.sweep.load_sweep
  for a [sweep]); any other block is a fragment, whose tables replace those of a small base
  experiment before validation. The two experiments that the docs tell users to run
  (moons.toml, my-methods.toml) are run through `lifelong run`.
- Every `lifelong ...` command of a ```bash block parses with the CLI's own argparse parser
  (not run), every file it names under configs/ exists, and so does every script of a
  `python benchmarks/...` line.

Markers, an HTML comment on the line just before a fence (invisible on the site):

- ``<!-- not run: REASON -->``: the block is not run (only for what cannot run in a test, such
  as a GPU-only line); the reason is required;
- ``<!-- file: NAME -->``: the block is also written to NAME in the page's working folder
  before the page's Python blocks run (a module the page imports, an experiment file);
- ``<!-- needs: data -->``: the block reads the real data files; it runs with $LIFELONG_DATA
  set to the test data root, and the page is skipped where there is none.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*(not run|file|needs):\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int          # the first line of the code, 1-based, in the page
    lang: str
    code: str
    not_run: str | None = None
    file: str | None = None
    needs_data: bool = False

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the marker on the line before each."""
    lines = page.read_text().split("\n")
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        start = i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
        options = {}
        previous = lines[i - 1].strip() if i > 0 else ""
        if previous.startswith("<!--"):
            marker = MARKER.match(previous)
            assert marker, f"{page.relative_to(ROOT)}:{i}: unknown marker {previous!r}"
            kind, value = marker.groups()
            assert value, f"{page.relative_to(ROOT)}:{i}: the marker {kind!r} needs a value"
            options = {"not run": {"not_run": value}, "file": {"file": value},
                       "needs": {"needs_data": value == "data"}}[kind]
        found.append(Block(page, start + 1, opening.group(1), "\n".join(lines[start:end]) + "\n", **options))
        i = end + 1
    return found


PAGES = sorted(DOCS.rglob("*.md"))
ALL = [b for page in PAGES for b in blocks(page)]
PYTHON_PAGES = sorted({b.page for b in ALL if b.lang == "python"})
TOML = [b for b in ALL if b.lang == "toml" and not b.not_run]
BASH = [b for b in ALL if b.lang == "bash" and not b.not_run]


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


@contextlib.contextmanager
def working_folder(tmp_path: Path, monkeypatch, page: Path):
    """``tmp_path`` as the current directory and first on ``sys.path``, holding the page's file
    blocks and a link to configs/; registries and user modules are put back afterwards."""
    import scenarios
    import strategies

    for block in blocks(page):
        if block.file:
            (tmp_path / block.file).write_text(block.code)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    registries = [scenarios.FAMILIES, strategies.STRATEGIES, strategies.MODELS]
    saved = [dict(r.entries) for r in registries]
    try:
        yield tmp_path
    finally:
        for registry, entries in zip(registries, saved):
            registry.entries.clear()
            registry.entries.update(entries)
        for name, module in list(sys.modules.items()):  # the page's own modules (my_methods, ...)
            if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
                del sys.modules[name]


def run_python(code: str, filename: str, namespace: dict, first_line: int = 1) -> str:
    """Run ``code`` in ``namespace``; tracebacks name the page and its line. Returns stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n" * (first_line - 1) + code, filename, "exec"), namespace)
    return out.getvalue()


# -- the README ---------------------------------------------------------------------------------

def test_readme_python_example_runs():
    block = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = run_python(block, "README.md", {})
    assert "(6, 5, 6)" in out and "ACC " in out and "forgetting " in out


def setup_commands(text: str) -> list[str]:
    setup = re.search(r"## Set-up\n(.*?)\n## ", text, re.S).group(1)
    return re.findall(r"```bash\n(.*?)\n```", setup, re.S)


def test_ci_runs_the_readme_test_command():
    commands = setup_commands(README.read_text())
    assert len(commands) == 2 and all(c.startswith("python3 -m venv .venv && ") for c in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
    assert "mkdocs build --strict" in ci.split(commands[1], 1)[1], "CI builds the docs after the tests"


def test_getting_started_has_the_readme_setup_commands():
    assert setup_commands((DOCS / "getting-started.md").read_text()) == setup_commands(README.read_text())


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_readme_is_short():
    assert len(README.read_text().splitlines()) < 200


# -- Python blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PYTHON_PAGES, ids=page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch, request):
    runnable = [b for b in blocks(page) if b.lang == "python" and not b.not_run]
    if any(b.needs_data for b in runnable):
        monkeypatch.setenv("LIFELONG_DATA", str(request.getfixturevalue("data_root")))
    namespace = {"__name__": "__docs__"}
    with working_folder(tmp_path, monkeypatch, page):
        for block in runnable:
            run_python(block.code, block.where, namespace, block.line)


def test_not_run_markers_are_rare():
    """Skipping is for what cannot run in a test; a slow example is made smaller instead."""
    skipped = [b.where for b in ALL if b.not_run]
    assert len(skipped) <= 3, skipped


# -- the experiments the docs tell users to run -------------------------------------------------

def test_own_stream_example_runs(tmp_path, monkeypatch):
    """docs/scenarios/own-streams.md: my_streams.py and moons.toml through `lifelong run`."""
    from simulator import cli

    with working_folder(tmp_path, monkeypatch, DOCS / "scenarios" / "own-streams.md"):
        assert cli.main(["run", "moons.toml", "--quiet"]) == 0
    assert (tmp_path / "reports" / "moons" / "index.html").exists()


def test_own_strategy_and_model_example_runs(tmp_path, monkeypatch):
    """docs/guides/add-strategy.md: my_methods.py and my-methods.toml through ``run`` and
    ``report``; tests/simulator/test_user_code.py takes them through sweeps and resume."""
    import json

    from simulator import cli

    with working_folder(tmp_path, monkeypatch, DOCS / "guides" / "add-strategy.md"):
        assert cli.main(["run", "my-methods.toml", "--quiet"]) == 0
        run_dir = tmp_path / "reports" / "my-methods"
        config = json.loads((run_dir / "config.json").read_text())
        assert config["strategies"]["anchor"]["strategy"] == "my_methods:L2Anchor"
        assert config["strategies"]["anchor"]["model"] == {"name": "my_methods:small_net", "width": 32}
        results = json.loads((run_dir / "results.json").read_text())
        assert sorted(r["strategy"] for r in results["runs"]) == ["anchor", "finetune"]
        assert cli.main(["report", str(run_dir)]) == 0 and (run_dir / "index.html").exists()


# -- TOML blocks --------------------------------------------------------------------------------

BASE_EXPERIMENT = {"name": "fragment", "seeds": [0], "scenario": {"name": "split-digits"},
                   "strategies": {"finetune": {}}}


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.where)
def test_toml_blocks_are_valid_experiments(block, tmp_path, monkeypatch):
    from simulator.config import validate_experiment
    from simulator.sweep import load_sweep
    from simulator.config import load_experiment

    raw = tomllib.loads(block.code)
    with working_folder(tmp_path, monkeypatch, block.page):
        if "scenario" in raw and "strategies" in raw:
            path = tmp_path / (block.file or "experiment.toml")
            path.write_text(block.code)
            experiment = load_sweep(path) if "sweep" in raw else load_experiment(path)
            assert experiment.name
        else:
            assert "sweep" not in raw, f"{block.where}: a [sweep] example must be a whole experiment file"
            data = copy.deepcopy(BASE_EXPERIMENT)
            data.update(raw)  # the fragment's tables replace the base's
            validate_experiment(data, block.where)


# -- bash blocks --------------------------------------------------------------------------------

def commands(block: Block) -> list[list[str]]:
    """The commands of a bash block: each line, split at ``&&``, comments removed."""
    found = []
    for line in block.code.splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in words + ["&&"]:
            if word in ("&&", "||", ";", "|"):
                if command:
                    found.append(command)
                command = []
            else:
                command.append(word)
    return found


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.where)
def test_bash_commands_parse(block, capsys):
    from simulator.cli import parser

    for words in commands(block):
        program = Path(words[0]).name
        if program == "lifelong":
            try:
                parser().parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"{block.where}: `{shlex.join(words)}` does not parse: {capsys.readouterr().err}")
            missing = [w for w in words[1:] if w.startswith("configs/") and not (ROOT / w).exists()]
            assert not missing, f"{block.where}: `{shlex.join(words)}` names missing files {missing}"
        elif program.startswith("python") and len(words) > 1 and words[1].startswith("benchmarks/"):
            assert (ROOT / words[1]).exists(), f"{block.where}: no script {words[1]}"


def test_every_bash_block_has_a_command():
    assert all(commands(b) for b in BASH)
    assert sum(1 for b in BASH for words in commands(b) if Path(words[0]).name == "lifelong") >= 20
