"""`lifelong list [NAME]`: every key of an experiment file, filtered by name, from the cache."""

import os
import subprocess
import sys
import textwrap

from simulator import cli

# A listing as `lifelong list` prints it, in the pieces that a filter keeps or drops whole.
TOP_LEVEL = textwrap.dedent("""\
    Experiment file, top level (keys outside any table)
      name: str | None = None     experiment name
      seeds: list[int] = [0]      one run per seed""")
EVALUATION = textwrap.dedent("""\
    [evaluation] (how every task is scored)
      episodes: int = 20          held-out episodes per task""")
STRATEGIES = "Strategies (experiment file: [strategies.<label>])"
MAML = ("  maml: MAML: meta-learn an initialisation\n"
        "      inner_lr: float = 0.1   learning rate of the inner loop\n"
        "      episodes: int = 8       not an entry: a parameter of maml")
LAMAML = "  lamaml: La-MAML: online meta-learning\n      alpha_init: float = 0.15"
FINETUNE = "  finetune: minibatch training\n      lr: float = 0.1"


def listing(*sections: list[str]) -> str:
    """The text of a listing: sections apart by a blank line, each a section's lines."""
    return "\n\n".join("\n".join(lines) for lines in sections)


LISTING = listing([TOP_LEVEL], [EVALUATION], [STRATEGIES, MAML, LAMAML, FINETUNE])


def test_filter_keeps_the_entries_whose_name_contains_the_text_ignoring_case():
    assert cli.filter_list(LISTING, "MAML") == listing([STRATEGIES, MAML, LAMAML])
    # Keys of the experiment file are entries too; a strategy's parameters are not.
    assert cli.filter_list(LISTING, "episodes") == listing([EVALUATION])
    assert cli.filter_list(LISTING, "E") == listing([TOP_LEVEL], [EVALUATION], [STRATEGIES, FINETUNE])
    assert cli.filter_list(LISTING, "inner_lr") is None


def test_list_shows_every_key_of_an_experiment_file(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    sections = [s.split("\n", 1)[0] for s in out.split("\n\n")]
    assert [s.split(" (")[0] for s in sections] == [
        "Experiment file, top level", "[evaluation]", "[online]", "[logging]", "Scenarios", "Strategies", "Models"]
    for line in ("  seeds: list[int] = [0]", "  device: 'cpu' | 'cuda' | 'auto' = 'cpu'", "  threads: int = 1",
                 "  data_root: str | None = None", "  episodes: int = 20", "  adapt_steps: int = 5",
                 "  full_test: bool = False", "  recovery_window: int = 20", "  split-digits: ", "  maml: ",
                 "      inner_lr: float = 0.1", "  conv4: ", "      filters: int = 64"):
        assert f"\n{line}" in out, line


def test_list_name_prints_the_matching_entries_or_exits_2(capsys):
    assert cli.main(["list", "Conv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Models (") and "\n  conv4: " in out and "  mlp:" not in out and "Strategies" not in out
    assert cli.main(["list", "no-such-thing"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "lifelong: error: no experiment-file key, scenario, strategy or model has a name containing "
        "'no-such-thing' (ignoring case); `lifelong list` without a name shows them all\n")


def test_list_name_reads_the_cache_without_torch(tmp_path):
    """A current cache answers ``list NAME`` too: the filter works on the cached text."""
    (tmp_path / "list.txt").write_text(f"{cli._list_key()}\n{LISTING}")
    code = ("import sys; from simulator.cli import main; code = main(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic')), file=sys.stderr); "
            "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "list", "LAMAML"], capture_output=True, text=True,
                          env={**os.environ, "LIFELONG_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == listing([STRATEGIES, LAMAML]) + "\n"
    assert proc.stderr.strip() == "[]"


def test_the_cache_key_covers_the_experiment_file_keys(monkeypatch, tmp_path):
    """Editing a module that defines the experiment file's tables (simulator/config.py for the
    top-level keys, evaluator.py for [evaluation], ...) renders the list again."""
    from simulator.config import LoggingParams, TopLevel
    from simulator.evaluator import EvalSettings
    from simulator.online import OnlineSettings

    for table in (TopLevel, EvalSettings, OnlineSettings, LoggingParams):
        assert table.__module__.replace(".", "/") + ".py" in cli.LIST_MODULES, table
    before = cli._list_key()
    source = tmp_path / "simulator" / "config.py"
    source.parent.mkdir()
    source.write_text("# another version of the experiment file's keys\n")
    monkeypatch.setattr(cli, "LIST_MODULES", (str(source),))   # an absolute path replaces the project's file
    assert cli._list_key() != before
