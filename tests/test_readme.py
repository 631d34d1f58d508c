"""The README's Python example runs as written, and its test command is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## In Python\n\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(6, 5, 6)" in out and "ACC " in out and "forgetting " in out


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    setup = re.search(r"## Set-up\n(.*?)\n## ", readme, re.S).group(1)
    commands = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert len(commands) == 2 and all(c.startswith("python3 -m venv .venv && ") for c in commands)
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_own_stream_examples_run(tmp_path, capsys, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"### Your own streams\n(.*?)\n### ", readme, re.S).group(1)
    python_blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(python_blocks[0], "README.md", "exec"), {})
    assert "(3, 2, 3)" in capsys.readouterr().out
    (tmp_path / "my_streams.py").write_text(python_blocks[1])
    (tmp_path / "moons.toml").write_text(re.findall(r"```toml\n(.*?)```", section, re.S)[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from simulator import cli

    assert cli.main(["run", "moons.toml", "--quiet"]) == 0
    assert (tmp_path / "reports" / "moons" / "index.html").exists()


def test_own_strategy_and_model_example_runs(tmp_path, monkeypatch):
    """The README's own strategy and model (``my_methods.py``, ``my-methods.toml``) through
    ``run`` and ``report``; tests/simulator/test_user_code.py takes them through sweeps and resume."""
    import json

    readme = (ROOT / "README.md").read_text()
    section = re.search(r"### Your own strategies and models\n(.*?)\n### ", readme, re.S).group(1)
    (tmp_path / "my_methods.py").write_text(re.findall(r"```python\n(.*?)```", section, re.S)[0])
    (tmp_path / "my-methods.toml").write_text(re.findall(r"```toml\n(.*?)```", section, re.S)[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from simulator import cli

    assert cli.main(["run", "my-methods.toml", "--quiet"]) == 0
    run_dir = tmp_path / "reports" / "my-methods"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["strategies"]["anchor"]["strategy"] == "my_methods:L2Anchor"
    assert config["strategies"]["anchor"]["model"] == {"name": "my_methods:small_net", "width": 32}
    results = json.loads((run_dir / "results.json").read_text())
    assert sorted(r["strategy"] for r in results["runs"]) == ["anchor", "finetune"]
    assert cli.main(["report", str(run_dir)]) == 0 and (run_dir / "index.html").exists()
