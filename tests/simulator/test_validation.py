"""Bad input of every kind is stopped before anything is written (issue 12, finding 7).

Each case runs ``lifelong run FILE --out DIR`` and must exit with status 2 and one paragraph
naming the file and the field path, without a traceback, and leave no DIR behind. The table
holds the cases of the issue and those of an attacker and of a careless user; a message is
checked by a fragment distinctive enough that a regression shows. Further tests pin the bounds
themselves (the largest shots a pool supplies, the largest seed) on inputs that must run.
"""

import os
import re
import textwrap
from pathlib import Path

import pytest

from experiments import experiment_toml, write_experiment  # tests/simulator/experiments.py

import scenarios
from simulator import cli, preflight
from simulator.config import ConfigError, load_experiment, validate_experiment
from simulator.experiment import run_experiment

# The tiny experiments the cases change: one of classification, one of regression.
MLP = {"name": "mlp", "hidden": [16]}
DIGITS = experiment_toml("tiny", model=MLP)
SINE = experiment_toml("sine", seeds=None, model=MLP,
                       scenario={"name": "sinusoid", "num_tasks": 2, "train_functions": 20, "test_functions": 10})

HUGE = str(10**12)


def setting(*pairs: str, text: str = DIGITS) -> tuple[str, tuple[str, ...]]:
    """The experiment with ``--set`` overrides."""
    return text, tuple(arg for pair in pairs for arg in ("--set", pair))


def strategy(table: str, text: str = DIGITS) -> tuple[str, tuple[str, ...]]:
    """The experiment with one more strategy table."""
    return text + "\n" + textwrap.dedent(table), ()


def top(lines: str, text: str = DIGITS) -> tuple[str, tuple[str, ...]]:
    """The experiment with top-level keys replacing its first lines (name, seeds)."""
    return textwrap.dedent(lines) + text.split("seeds = [0]\n", 1)[-1], ()


CASES = [
    # -- finding 7 of the issue: a strategy that cannot run on the stream -----------------
    pytest.param(*strategy("[strategies.protomemory]\nmeta_iterations = 1\n", SINE),
                 "strategies.protomemory.strategy: protomemory learns classification streams, and stream "
                 "'sinusoid' is regression", id="protomemory-on-regression"),
    pytest.param(*strategy("[strategies.matching]\nmeta_iterations = 1\n", SINE),
                 "strategies.matching.strategy: matching learns classification streams", id="matching-on-regression"),
    pytest.param(*setting("model={name='conv4', filters=4}"),
                 "model.name: conv4 with 4 blocks needs height and width >= 16 (each block's 2x2 max-pooling "
                 "halves them), but the inputs are 8x8; use blocks = 3 or fewer", id="conv4-on-8x8"),
    pytest.param(*setting("model={name='conv4', filters=4}", text=SINE),
                 "model.name: conv4 needs images of shape (channels, height, width), but the inputs have shape (1,)",
                 id="conv4-on-1d"),
    pytest.param(*setting("evaluation.full_test=true", text=SINE),
                 "evaluation.full_test: needs a class-, task- or domain-incremental classification stream",
                 id="full-test-on-regression"),
    pytest.param(*strategy('[strategies.naive]\nstrategy = "avalanche.Naive"\nepochs = 1\n', SINE),
                 "strategies.naive.strategy: avalanche.Naive learns classification streams",
                 id="avalanche-on-regression"),
    # -- shots and query against the pools ----------------------------------------------------
    pytest.param(*setting("evaluation.shots=100"),
                 "evaluation.shots: the evaluation draws episodes of 100 support + 10 query items per class from "
                 "each task's test pool, and task 'digits 0-1' of seed 0's stream cannot supply them: class 0 has",
                 id="evaluation-shots-beyond-pool"),
    pytest.param(*setting("evaluation.query=60"), "evaluation.query: the evaluation draws episodes of 5 support + 60",
                 id="evaluation-query-beyond-pool"),
    pytest.param(*setting("evaluation.query=46", text=SINE),
                 "an episode needs 51 points; a group has 50", id="evaluation-query-beyond-function-points"),
    pytest.param(*setting("scenario.test_fraction=0.999"), "scenario: task 'digits 0-1' of seed 0's stream has no "
                 "examples in its train pool", id="empty-training-pool"),
    pytest.param(*setting("scenario.test_fraction=0.001"), "class 0 has 1 examples; an episode needs 15 per class",
                 id="tiny-test-pool"),
    pytest.param(*setting("scenario.shots=50"), "scenario.shots and scenario.query: the evaluation draws episodes "
                 "of 50 support + 10 query", id="scenario-shots-beyond-pool"),
    pytest.param(*setting("evaluation.full_test=true", "evaluation.shots=200"),
                 "evaluation.shots: the evaluation draws episodes of 200 support items per class from each task's "
                 "train pool", id="full-test-support-beyond-training-pool"),
    pytest.param(*strategy("[strategies.maml]\nmeta_iterations = 1\nshots = 100\nquery = 40\n"),
                 "strategies.maml: maml draws training episodes of 100 support + 40 query items per class",
                 id="maml-shots-beyond-training-pool"),
    pytest.param(*strategy("[strategies.protomemory]\nmeta_iterations = 1\nquery = 500\n"),
                 "strategies.protomemory: protomemory draws training episodes of 5 support + 500 query",
                 id="protomemory-query-beyond-training-pool"),
    # -- seeds, threads -----------------------------------------------------------------------
    pytest.param(DIGITS, ("--seeds", "4294967296"), "seeds: every seed must be in 0..2**32-1", id="seed-2**32"),
    pytest.param(*top("seeds = [0, -1]\n"), "seeds: every seed must be in 0..2**32-1 = 4294967295 (numpy seeds "
                 "are 32-bit), got -1", id="seed-negative"),
    pytest.param(*top("seeds = [0, 1.5]\n"), "seeds.1: must be an integer, got 1.5", id="seed-float"),
    pytest.param(*top("seeds = [3, 3]\n"), "seeds: must not repeat a seed", id="seed-repeated"),
    pytest.param(*top("seeds = []\n"), "seeds: must not be empty", id="seeds-empty"),
    pytest.param(*top('seeds = "0"\n'), "seeds: must be a list, got '0'", id="seeds-string"),
    pytest.param(*setting(f"threads={2**40}"), "threads: must be between 1 and 4096, got 1099511627776: torch starts "
                 "one OS thread per CPU thread", id="threads-2**40"),
    pytest.param(*setting("threads=0"), "threads: must be between 1 and 4096, got 0", id="threads-zero"),
    pytest.param(*setting("threads=true"), "threads: must be an integer, got True", id="threads-bool"),
    # -- layer sizes --------------------------------------------------------------------------
    pytest.param(*setting("model.hidden=[0]"), "model.hidden: every width must be > 0, got [0]", id="hidden-zero"),
    pytest.param(*setting("model.hidden=[16, -3]"), "model.hidden: every width must be > 0, got [16, -3]",
                 id="hidden-negative"),
    pytest.param(*setting("model.hidden=[16.0]"), "model.hidden.0: must be an integer, got 16.0", id="hidden-float"),
    pytest.param(*setting("model.hidden=16"), "model.hidden: must be a list, got 16", id="hidden-not-a-list"),
    pytest.param(*setting(f"model.hidden=[{HUGE}]"), "model: the weights of strategies.finetune's mlp "
                 "(75000000000010 parameters) would take 272.8 TiB, more than this machine's memory",
                 id="hidden-beyond-memory"),
    pytest.param(*setting(f"model.hidden=[{10**18}]"), "model: mlp cannot be built for stream 'split-digits'",
                 id="hidden-beyond-int64"),
    pytest.param(*setting("model={name='conv4', filters=0, blocks=3}"), "model.filters: must be > 0",
                 id="conv4-filters-zero"),
    pytest.param(*setting(f"model={{name='conv4', blocks={10**18}}}"), "model.name: conv4 with "
                 f"{10**18} blocks needs height and width >= 2**{10**18}", id="conv4-blocks-absurd"),
    pytest.param(*strategy("[strategies.protomemory]\nembedding_dim = 0\n"),
                 "strategies.protomemory.embedding_dim: must be > 0", id="embedding-dim-zero"),
    pytest.param(*strategy("[strategies.small]\nstrategy = 'finetune'\nmodel = {name = 'mlp', hidden = [-1]}\n"),
                 "strategies.small.model.hidden: every width must be > 0", id="strategy-model-negative"),
    # -- finite numbers ------------------------------------------------------------------------
    pytest.param(*setting("strategies.finetune.lr=inf"), "strategies.finetune.lr: must be a finite number, got inf",
                 id="lr-inf-by-set"),
    pytest.param(DIGITS.replace("epochs = 1", "epochs = 1\nlr = -inf"), (),
                 "strategies.finetune.lr: must be a finite number, got -inf", id="lr-minus-inf-in-file"),
    pytest.param(*setting("strategies.finetune.lr=nan"), "strategies.finetune.lr: must be a finite number, got nan",
                 id="lr-nan"),
    pytest.param(*setting("scenario.phase_drift=inf", text=SINE), "scenario.phase_drift: must be a finite number",
                 id="unbounded-float-inf"),
    pytest.param(*setting("scenario.amplitude=[0.1, nan]", text=SINE), "scenario.amplitude.1: must be a finite "
                 "number, got nan", id="float-list-nan"),
    pytest.param(*strategy("[strategies.si]\nstrategy = 'avalanche.SI'\nsi_lambda = [1.0, inf]\n"),
                 "strategies.si.si_lambda.1: must be a finite number, got inf", id="union-list-inf"),
    pytest.param(*strategy("[strategies.si]\nstrategy = 'avalanche.SI'\nsi_lambda = inf\n"),
                 "strategies.si.si_lambda: must be a finite number, got inf", id="union-float-inf"),
    # -- names -------------------------------------------------------------------------------
    pytest.param(*setting("name='../../x'"), "name: must be a plain name (letters, digits, '-', '_' and '.', not "
                 "starting with '.'), since it names the folder reports/<name>; got '../../x'", id="name-parent"),
    pytest.param(*setting("name='..'"), "got '..'", id="name-dotdot"),
    pytest.param(*setting("name='.'"), "got '.'", id="name-dot"),
    pytest.param(*setting("name='/tmp/x'"), "got '/tmp/x'", id="name-absolute"),
    pytest.param(*setting("name='a/b'"), "got 'a/b'", id="name-slash"),
    pytest.param(*top('name = "a\\u0000b"\nseeds = [0]\n'), "got 'a\\x00b'", id="name-nul"),
    pytest.param(*setting("name='.hidden'"), "got '.hidden'", id="name-hidden"),
    pytest.param(*setting("name=''"), "name: must be a plain name", id="name-empty"),
    pytest.param(*setting(f"name='{'n' * 201}'"), "(more than 200 characters)", id="name-too-long"),
    pytest.param(*top('name = "\\u001b[31mred"\nseeds = [0]\n'), "got '\\x1b[31mred'", id="name-escape"),
    pytest.param(*strategy('[strategies."\\u001b[2J"]\nstrategy = "finetune"\n'),
                 "strategies: label '\\x1b[2J' must be printable text", id="label-escape-sequence"),
    pytest.param(*strategy('[strategies."  "]\nstrategy = "finetune"\n'), "strategies: label '  ' must be printable",
                 id="label-blank"),
    # -- tables, keys and types ---------------------------------------------------------------------
    pytest.param(*top("seeds = [0]\nstrategies = {}\n", DIGITS.split("[strategies.finetune]")[0]),
                 "strategies: must not be empty", id="strategies-empty"),
    pytest.param(DIGITS.split("[strategies.finetune]")[0], (), "strategies: required", id="strategies-missing"),
    pytest.param(*setting("strategies.finetune=3"), "strategies.finetune: must be a table, got 3",
                 id="strategy-not-a-table"),
    pytest.param(*setting("strategies.finetune.strategy=3"), "strategies.finetune.strategy: must be a string, got 3",
                 id="strategy-name-not-a-string"),
    pytest.param(*setting("evaluation.chunk=0"), "evaluation.chunk: must be > 0", id="chunk-zero"),
    pytest.param(*setting("evaluation.episodes=0"), "evaluation.episodes: must be > 0", id="episodes-zero"),
    pytest.param(*setting("evaluation.colour=1"), "evaluation.colour: unknown key (valid keys: episodes",
                 id="unknown-key-in-evaluation"),
    pytest.param(*setting("model.depth=3"), "model.depth: unknown key (valid keys: hidden, activation, init)",
                 id="unknown-key-in-model"),
    pytest.param(*setting("scenario.num_task=3"), "scenario.num_task: unknown key", id="unknown-key-in-scenario"),
    pytest.param(*setting("scenario.num_tasks=two"), "scenario.num_tasks: must be an integer, got 'two'",
                 id="scenario-param-type-by-set"),
    pytest.param(*setting("strategies.finetune.epochs='5'"), "strategies.finetune.epochs: must be an integer, got '5'",
                 id="epochs-string"),
    pytest.param(*setting("strategies.finetune.optimizer='adamw'"),
                 "strategies.finetune.optimizer: must be one of 'sgd' or 'adam', got 'adamw'", id="optimizer-typo"),
    pytest.param(*setting("device='gpu'"), "device: must be one of 'cpu', 'cuda' or 'auto', got 'gpu'",
                 id="device-typo"),
    pytest.param(*setting("evaluation=3"), "evaluation: must be a table, got 3", id="evaluation-not-a-table"),
    pytest.param(*setting("model='mlp'"), "model: must be a table, got 'mlp'", id="model-not-a-table"),
    pytest.param(*setting("model.name='resnet'"), "model.name: unknown model 'resnet' (valid: conv4, mlp)",
                 id="unknown-model"),
    pytest.param(*setting("scenario.name.x=1"), "scenario.name: is not a table; cannot --set inside it",
                 id="set-inside-a-value"),
    pytest.param(*setting("noequals"), "--set: 'noequals' is not of the form key.path=value", id="set-without-value"),
    pytest.param(*setting("data_root=''"), "data_root: must not be empty", id="data-root-empty"),
    pytest.param(*setting("scenario.num_tasks=6"), "exceeds the 10 digit classes", id="too-many-tasks"),
    pytest.param(*setting("strategies.reptile.epsilon=2", "strategies.reptile.meta_iterations=1"),
                 "strategies.reptile.epsilon: must be <= 1", id="reptile-epsilon"),
    pytest.param(*setting("sweep.x=[1]"), "sweep: this file declares a sweep: run it with `lifelong sweep`",
                 id="sweep-in-run"),
    pytest.param(*setting("scenario.name='os:system'"), "scenario.name: os:system must accept a keyword argument "
                 "'seed'", id="scenario-any-function"),
    pytest.param(*setting("scenario.protocol='few-shot'"), "scenario.protocol: must be one of 'class-incremental' or "
                 "'task-incremental', got 'few-shot'", id="protocol-the-family-lacks"),
    pytest.param(*setting("evaluation.adapt_steps=-1"), "evaluation.adapt_steps: must be >= 0",
                 id="adapt-steps-negative"),
    # -- absurd sizes: refused before they exhaust memory -------------------------------------------------
    pytest.param(*setting(f"evaluation.episodes={HUGE}"), f"evaluation.episodes: {HUGE} evaluation episodes per "
                 "task (seed 0) would take", id="episodes-beyond-memory"),
    pytest.param(*setting(f"evaluation.adapt_steps={HUGE}"), "evaluation.adapt_steps: the evaluation tensors of "
                 "1 run(s) scoring 1000000000001 adaptation steps would take", id="adapt-steps-beyond-memory"),
    pytest.param(*strategy(f"[strategies.maml]\nmeta_iterations = 1\nmeta_batch_size = {HUGE}\n"),
                 f"strategies.maml: {HUGE} training episodes per step would take", id="meta-batch-beyond-memory"),
]


def run_cli(tmp_path: Path, capsys, text: str, args=()) -> tuple[int, str, Path, Path]:
    path = write_experiment(tmp_path, text)
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "--quiet", *args])
    return code, capsys.readouterr().err, path, out


def assert_refused(code: int, err: str, out: Path, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err    # one paragraph
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()                            # nothing written, no empty folder


@pytest.mark.parametrize("text, args, fragment", CASES)
def test_bad_input_is_refused_cleanly(tmp_path, capsys, text, args, fragment):
    code, err, path, out = run_cli(tmp_path, capsys, text, args)
    assert_refused(code, err, out, f"invalid experiment file {path}: ", fragment)


@pytest.mark.parametrize("text, args, fragment", [
    pytest.param(*setting("scenario={name='schedule', parts=[{name='split-digits', num_tasks=2}, {name='sinusoid'}]}"),
                 "part 1 (sinusoid) has kind 'regression' but part 0 (split-digits) has 'classification'",
                 id="schedule-of-two-kinds"),
    pytest.param(*setting("scenario={name='schedule', parts=[{name='split-digits', num_tasks=2}], sequence=[0, 5]}"),
                 "sequence index 5 is out of range for a stream of 2 tasks", id="schedule-index-out-of-range"),
    pytest.param(*setting("scenario={name='split-mnist', data_root='/etc/hostname'}"),
                 "mnist file train-images-idx3-ubyte.gz is missing: looked for /etc/hostname/mnist/",
                 id="data-root-is-a-file"),
    pytest.param(*setting("scenario={name='subprocess:run', args=['true']}"),
                 "scenario subprocess:run failed with seed 0: TypeError: ", id="scenario-function-refusing-seed"),
])
def test_streams_that_cannot_be_built_are_refused_cleanly(tmp_path, capsys, text, args, fragment):
    """Problems found while building the streams (scenarios.base.ScenarioError)."""
    code, err, _, out = run_cli(tmp_path, capsys, text, args)
    assert_refused(code, err, out, fragment)


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text, args = setting("evaluation.shots=100", "model.name='conv4'")
    text += "\n[strategies.protomemory]\nmeta_iterations = 1\n"
    code, err, path, out = run_cli(tmp_path, capsys, text.replace("hidden = [16]", "filters = 4"), args)
    assert_refused(code, err, out, "model.name: conv4 with 4 blocks", "evaluation.shots: the evaluation draws")


def test_preflight_refuses_before_the_run_directory_is_made(tmp_path):
    for text in (DIGITS.replace("episodes = 4", "episodes = 4\nshots = 100"),
                 SINE + "\n[strategies.protomemory]\nmeta_iterations = 1\n"):
        path = write_experiment(tmp_path, text)
        with pytest.raises(ConfigError):
            run_experiment(load_experiment(path), tmp_path / "out", quiet=True)
        assert not (tmp_path / "out").exists()


# -- the bounds are the pools' own: the largest supply passes, one more is refused ---------------

@pytest.mark.parametrize("split, query, field", [("test", 10, "evaluation.shots and evaluation.query"),
                                                ("train", 1, "strategies.maml")])
def test_shots_bound_is_the_smallest_class_of_every_task(split, query, field):
    streams = {seed: scenarios.build("split-digits", {"num_tasks": 2}, seed) for seed in (0, 1)}
    largest = min(int(getattr(task, split).counts.min()) for stream in streams.values() for task in stream)

    def experiment(shots):
        sizes = {"shots": shots, "query": query}
        return validate_experiment({
            "seeds": [0, 1], "scenario": {"name": "split-digits", "num_tasks": 2}, "model": {"hidden": [16]},
            "evaluation": sizes if split == "test" else {},
            "strategies": {"maml": {"meta_iterations": 1, **(sizes if split == "train" else {})}}}, "exp.toml")

    preflight.check(experiment(largest - query), streams)
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: .* cannot supply them: class \d+ has {largest} "):
        preflight.check(experiment(largest - query + 1), streams)


def test_query_bound_of_a_regression_pool_is_its_points():
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "train_functions": 4, "test_functions": 4, "points": 20}, 0)
    raw = {"scenario": {"name": "sinusoid"}, "model": {"hidden": [8]}, "strategies": {"finetune": {}},
           "evaluation": {"shots": 5, "query": 15}}
    preflight.check(validate_experiment(raw, "exp.toml"), {0: stream})
    raw["evaluation"]["query"] = 16
    with pytest.raises(ConfigError, match="an episode needs 21 points; a group has 20"):
        preflight.check(validate_experiment(raw, "exp.toml"), {0: stream})


def test_what_fits_runs(tmp_path, capsys):
    """The edges of the bounds are accepted: the largest seed, conv4 with as many blocks as 8x8
    images allow, a one-unit layer, the largest finite float."""
    text = DIGITS.replace("hidden = [16]", "hidden = [1]")
    text += ("\n[strategies.small]\nstrategy = 'finetune'\nepochs = 1\n"
             "model = {name = 'conv4', filters = 2, blocks = 3}\n")
    code, err, _, out = run_cli(tmp_path, capsys, text, ("--seeds", str(2**32 - 1)))
    assert code == 0, err
    assert (out / "results.json").is_file()
    raw = {"scenario": {"name": "split-digits"}, "strategies": {"finetune": {"lr": 1e308}}}
    assert validate_experiment(raw, "exp.toml").strategies[0].config.lr == 1e308


# -- files that cannot be experiment files ---------------------------------------------------------

def test_a_directory_is_refused(tmp_path, capsys):
    (tmp_path / "exp.toml").mkdir()
    code = cli.main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", str(tmp_path / "exp.toml"),
                   "is a directory, not an experiment file")


@pytest.mark.parametrize("content, fragment", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file (byte 0x89 at offset 0 is not UTF-8)"),
    ("name = 'caf\u00e9'\n".encode("latin-1"), "not a text file (byte 0xe9 at offset 11 is not UTF-8)"),
    (b"name = 'x'\x00\n", "not valid TOML"),
])
def test_binary_and_non_utf8_files_are_refused(tmp_path, capsys, content, fragment):
    path = tmp_path / "exp.toml"
    path.write_bytes(content)
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", str(path), fragment)


def test_an_unreadable_file_is_refused(tmp_path, capsys, monkeypatch):
    path = write_experiment(tmp_path, DIGITS)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail as it would for a user
        def denied(self):
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "read_bytes", denied)
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", str(path), "cannot be read: Permission denied")


def test_a_pipe_and_a_huge_file_are_refused_unread(tmp_path, capsys):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would block for ever
    code = cli.main(["run", str(fifo), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", "is not a regular file")
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as f:
        f.truncate(2**40)  # sparse: takes no disk space
    code = cli.main(["run", str(huge), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out", "is 1099511627776 bytes")


@pytest.mark.parametrize("stem", [".hidden", "my experiment"])
def test_a_file_name_that_is_no_plain_name_needs_a_name(tmp_path, capsys, stem):
    path = write_experiment(tmp_path, DIGITS.replace('name = "tiny"\n', ""), f"{stem}.toml")
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out")])
    assert_refused(code, capsys.readouterr().err, tmp_path / "out",
                   "name: not set, and the default (the file's name without its extension) must be a plain name",
                   f"got '{stem}'; set name = ")


# -- a user's stream function that raises ---------------------------------------------------------

FAILING = '''
def make_stream(num_tasks: int = 2, seed: int = 0):
    if seed == 1:
        raise FileNotFoundError("no such file: /data/blobs.npz\\n(download it first)")
    raise RuntimeError("boom")
'''


@pytest.fixture
def failing_module(module_in_cwd):
    """The name of a module in the current directory whose ``make_stream`` raises."""
    return module_in_cwd(FAILING, "failing_streams")


@pytest.mark.parametrize("seed, fragment", [
    (0, "scenario {m}:make_stream failed with seed 0: RuntimeError: boom"),
    (1, "scenario {m}:make_stream failed with seed 1: FileNotFoundError: no such file: /data/blobs.npz "
        "(download it first)"),
])
def test_an_exception_in_a_user_stream_is_reported_as_its_error(tmp_path, capsys, failing_module, seed, fragment):
    text = f'[scenario]\nname = "{failing_module}:make_stream"\n[strategies.finetune]\nepochs = 1\n'
    code, err, _, out = run_cli(tmp_path, capsys, text, ("--seeds", str(seed)))
    assert_refused(code, err, out, fragment.format(m=failing_module))
