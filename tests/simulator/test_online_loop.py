"""The online loop (docs/design.md, "The online loop"): predict before the labels, then
observe; the anytime tensor; checkpoints and resume mid-stream."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from scenarios.base import LabelledPool, StreamSpec, Task
from simulator.evaluator import EvalSettings
from simulator.online import OnlineSettings, evaluation_points, run_online
from strategies.base import Strategy

SPEC = StreamSpec(name="hand-built", kind="classification", protocol="class-incremental", input_shape=(2,),
                  output_size=3, num_tasks=2, shots=2, query=2)


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    task: int
    pool: int
    switch: bool


class HandBuiltStream:
    """An online stream written out by hand: labels, tasks, pools and switches per batch."""

    pools = ("near", "far")
    pretrain = None

    def __init__(self, labels: list[list[int]], tasks: list[int], pools: list[int], boundaries: str = "hidden"):
        self.labels, self.tasks, self.pool_of, self.boundaries = labels, tasks, pools, boundaries
        self.spec = SPEC
        pool = LabelledPool(torch.randn(30, 2, generator=torch.Generator().manual_seed(1)), torch.arange(3).repeat(10))
        self.columns = tuple(Task(j, f"column {j}", (0, 1, 2), pool, pool, "class-incremental", 3) for j in range(2))
        self.column_names = ("column 0", "column 1")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, t: int) -> Batch:
        y = torch.tensor(self.labels[t])
        x = torch.stack([y.float(), torch.full((len(y),), float(t))], 1)
        switch = t == 0 or self.tasks[t] != self.tasks[t - 1]
        return Batch(x, y, self.tasks[t], self.pool_of[t], switch)

    def meta(self) -> dict[str, np.ndarray]:
        switch = [t == 0 or self.tasks[t] != self.tasks[t - 1] for t in range(len(self))]
        return {"task": np.array(self.tasks), "pool": np.array(self.pool_of), "switch": np.array(switch)}


class Scripted(Strategy):
    """Predicts the labels of a script, records every call; a cheater keeps the last labels it saw."""

    name = "scripted"

    def __init__(self, script: list[list[int]] | None = None, cheat: bool = False):
        super().__init__()
        self.script, self.cheat, self.calls, self.seen = script, cheat, [], None

    def predict_online(self, x: torch.Tensor) -> torch.Tensor:
        t = int(x[0, 1])
        self.calls.append(("predict", t, x.shape))
        labels = torch.tensor(self.script[t]) if self.script else (self.seen if self.cheat else torch.zeros(len(x)))
        if labels is None or len(labels) != len(x):
            labels = torch.zeros(len(x), dtype=torch.long)
        return nn.functional.one_hot(labels.long(), 3).float()

    def observe(self, x: torch.Tensor, y: torch.Tensor, task: int | None = None) -> dict[str, Any]:
        self.calls.append(("observe", int(x[0, 1]), task))
        self.seen = y.clone()
        return {}


def _run(stream, strategy, **online):
    return run_online(stream, strategy, nn.Linear(2, 3), seed=0, settings=EvalSettings(episodes=2, adapt_steps=1),
                      online=OnlineSettings(**{"eval_every": 2, **online}))


LABELS = [[0, 1, 2], [0, 0, 1], [2, 2, 2], [1, 0, 1], [1, 1, 1]]
TASKS, POOLS = [0, 0, 1, 1, 0], [0, 0, 1, 1, 0]


def test_the_strategy_is_scored_before_it_sees_the_labels():
    strategy = Scripted()
    _run(HandBuiltStream(LABELS, TASKS, POOLS), strategy)
    expected = [c for t in range(5) for c in (("predict", t, torch.Size([3, 2])), ("observe", t, None))]
    assert strategy.calls == expected


def test_a_cheater_only_ever_has_the_previous_batch_labels():
    result = _run(HandBuiltStream(LABELS, TASKS, POOLS), Scripted(cheat=True))
    # batch 0: no labels yet (predicts 0): 1/3; then each batch is predicted with the previous batch's labels
    expected = [1 / 3, np.mean([0 == 0, 1 == 0, 2 == 1]), np.mean([0 == 2, 0 == 2, 1 == 2]),
                np.mean([2 == 1, 2 == 0, 2 == 1]), np.mean([1 == 1, 0 == 1, 1 == 1])]
    assert result.online["correct"].tolist() == pytest.approx(expected)


def test_online_scores_of_a_scripted_strategy_are_the_hand_computed_ones():
    script = [[0, 1, 2], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0]]
    result = _run(HandBuiltStream(LABELS, TASKS, POOLS), Scripted(script=script))
    assert result.online["correct"].tolist() == pytest.approx([1, 2 / 3, 0, 1, 0])
    assert result.online["pool"].tolist() == POOLS and result.online["switch"].tolist() == [1, 0, 1, 0, 1]
    assert result.acc.shape == (len(evaluation_points(5, 2)), 2, 2) == (4, 2, 2)
    assert result.online["eval_batches"] == [0, 2, 4, 5]


def test_task_ids_reach_the_strategy_only_when_boundaries_are_given():
    hidden, given = Scripted(), Scripted()
    _run(HandBuiltStream(LABELS, TASKS, POOLS, boundaries="hidden"), hidden)
    _run(HandBuiltStream(LABELS, TASKS, POOLS, boundaries="given"), given)
    assert [c[2] for c in hidden.calls if c[0] == "observe"] == [None] * 5
    assert [c[2] for c in given.calls if c[0] == "observe"] == TASKS


# -- through the command line: files, determinism, kill and resume mid-stream -------------------

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from experiments import experiment_toml, write_experiment  # noqa: E402
from kill_switch import kill_after_checkpoint  # noqa: E402

from simulator import cli  # noqa: E402
from simulator.rundir import load_tensors  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FINETUNE_AND_PROTOMEMORY = {"finetune": {"lr": 0.05}, "protomemory": {"meta_iterations": 3, "embedding_dim": 8}}


def online_experiment(eval_every: int = 20, seeds: list[int] = [0, 1], batch_size: int = 10,
                      strategies: dict = FINETUNE_AND_PROTOMEMORY, sweep: dict | None = None) -> str:
    """The experiment "digits-online": split-digits in 3 tasks as an online stream of batches of
    ``batch_size``, evaluated every ``eval_every`` batches, learned by ``strategies``."""
    scenario = {"name": "online", "source": "split-digits", "source_params": {"num_tasks": 3}, "batch_size": batch_size}
    return experiment_toml("digits-online", seeds=seeds, scenario=scenario, online={"eval_every": eval_every},
                           strategies=strategies, sweep=sweep)


def _same(a: Path, b: Path) -> None:
    x, y = load_tensors(a), load_tensors(b)
    assert sorted(x) == sorted(y)
    for key in x:
        assert x[key].tobytes() == y[key].tobytes(), key


def test_an_online_run_writes_its_files_and_reruns_bit_identical(tmp_path):
    exp = write_experiment(tmp_path, online_experiment(), "online.toml")
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    _same(tmp_path / "a", tmp_path / "b")
    tensors = load_tensors(tmp_path / "a")
    document = json.loads((tmp_path / "a" / "results.json").read_text())
    run = document["runs"][0]
    assert run["loop"] == "online" and run["strategy"] == "finetune"
    length = len(tensors["finetune/seed0/online_correct"])
    assert set(run["online"]) >= {"cumulative_accuracy", "recovery_curve", "recovery_auc", "forgetting",
                                  "eval_batches", "pools", "columns"}
    assert run["online"]["eval_batches"][0] == 0 and run["online"]["eval_batches"][-1] == length
    assert tensors["finetune/seed0/anytime_acc"].shape == (len(run["online"]["eval_batches"]), 3, 2)
    assert run["online"]["cumulative_accuracy"]["total"] == pytest.approx(
        float(np.mean(tensors["finetune/seed0/online_correct"])))
    assert (tmp_path / "a" / "report.md").read_text().count("Online accuracy") >= 1


def test_a_kill_mid_stream_then_resume_is_bit_identical(tmp_path):
    exp = write_experiment(tmp_path, online_experiment(), "online.toml")
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "clean"), "--quiet"]) == 0
    killed = tmp_path / "killed"
    # protomemory pre-trains nothing (no pre-training stream); checkpoints every 7 batches: the
    # 9th save falls inside finetune's second seed
    kill_after_checkpoint(9, ["run", str(exp), "--out", str(killed), "--quiet", "--checkpoint-every", "7"], tmp_path)
    assert list((killed / "checkpoints").glob("*.pt"))
    assert cli.main(["run", str(exp), "--out", str(killed), "--resume", "--quiet", "--checkpoint-every", "5"]) == 0
    _same(tmp_path / "clean", killed)


def test_sigint_mid_stream_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path):
    # 5 tasks of single examples (about 1,250 batches) and a progress line every 0.05 s: finetune
    # takes 0.1 to 0.2 s for 755 batches on an idle machine, so it prints several lines
    # before it ends, and the SIGINT arrives while it runs.
    long_stream = online_experiment(eval_every=1000, seeds=[0], batch_size=1).replace("num_tasks = 3", "num_tasks = 5")
    exp = write_experiment(tmp_path, long_stream, "long.toml")
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "clean"), "--quiet"]) == 0
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "simulator.cli", "run", str(exp), "--out", str(out),
                              "--log-every", "0.05"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in child.stderr:
        lines.append(line)
        if ": batch " in line:
            child.send_signal(signal.SIGINT)
            break
    _, rest = child.communicate(timeout=120)
    log = "".join(lines) + rest
    assert child.returncode == 130, log
    assert "finetune seed 0: batch " in log and "online score so far" in log and "about" in log
    assert "stopped after batch" in log and "Traceback" not in log
    assert cli.main(["run", str(exp), "--out", str(out), "--resume", "--quiet"]) == 0
    _same(tmp_path / "clean", out)


class ClassMeans(Strategy):
    """Nearest class mean on the raw inputs, learned online: sums in float64, so the order in
    which examples arrive changes nothing, bit for bit (digits are multiples of 1/16)."""

    name = "class-means"

    def setup(self, model, spec, device, seed=0):
        super().setup(model, spec, device, seed)
        self.sums = torch.zeros(spec.output_size, int(np.prod(spec.input_shape)), dtype=torch.float64)
        self.counts = torch.zeros(spec.output_size, dtype=torch.float64)

    def observe(self, x, y, task=None):
        self.sums.index_add_(0, y, x.flatten(1).double())
        self.counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        return {}

    def logits(self, x):  # x: (..., *input_shape)
        means = self.sums / self.counts.clamp_min(1).unsqueeze(-1)
        flat = x.flatten(x.dim() - len(self.spec.input_shape)).double()
        logits = -(flat.unsqueeze(-2) - means).pow(2).sum(-1)
        return logits.masked_fill(self.counts == 0, -1e9).float()

    def predict_online(self, x):
        return self.logits(x)

    def adapt(self, support, steps):
        for _ in range(steps + 1):
            yield None

    def predict(self, state, x):
        return self.logits(x)

    def state_dict(self):
        return {**super().state_dict(), "sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.sums, self.counts = state["sums"], state["counts"]


def test_the_task_tensor_of_an_online_learner_is_the_anytime_tensor_at_task_boundaries():
    import scenarios
    import strategies
    from simulator.runner import run

    source = scenarios.build("split-digits", {"num_tasks": 3}, seed=0)
    online = scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 3},
                                        "batch_size": 10}, seed=0)
    per_task = [len(t.train) for t in source]  # each task's batches end at a boundary
    boundaries = np.cumsum([-(-n // 10) for n in per_task]).tolist()
    settings = EvalSettings(episodes=5, adapt_steps=1, columns="all", adapt_cells="all")  # the whole tensor
    model = lambda: strategies.build_model("mlp", {"hidden": [4]}, source.spec)  # noqa: E731 (unused weights)
    task_result = run(source, ClassMeans(), model(), seed=0, settings=settings)
    rows = {}
    for b in boundaries:  # one online run per boundary, evaluating exactly there
        r = run_online(online, ClassMeans(), model(), seed=0, settings=settings,
                       online=OnlineSettings(eval_every=b, pretrain=False))
        rows[b] = r.acc[r.online["eval_batches"].index(b)]
    for i, b in enumerate(boundaries):
        assert rows[b].tobytes() == task_result.acc[i + 1].tobytes(), i


def test_a_sweep_over_an_online_stream_summarises_the_online_metrics(tmp_path):
    exp = write_experiment(tmp_path, online_experiment(eval_every=50, seeds=[0], strategies={"finetune": {"lr": 0.05}},
                                                       sweep={"strategies.finetune.lr": [0.01, 0.1]}), "sweep.toml")
    assert cli.main(["sweep", str(exp), "--out", str(tmp_path / "sweep"), "--quiet"]) == 0
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "online_accuracy (k = 0) | online_accuracy (k = K) | recovery_auc (k = 0)" in summary
    assert summary.count("| finetune | 1 | 0 |") == 2


@pytest.mark.parametrize("change, message", [
    (('[strategies.finetune]', '[strategies.naive]\nstrategy = "avalanche.Naive"\n\n[strategies.finetune]'),
     "strategies.naive.strategy: avalanche.Naive does not learn online"),
    (("eval_every = 20", "eval_every = 0"), "online.eval_every: must be > 0"),
    (("eval_every = 20", "eval_every = 20\nevery = 3"), "online.every: unknown key"),
    (('source = "split-digits"', 'source = "nope"'), "scenario.source: unknown scenario 'nope'"),
])
def test_bad_online_experiments_are_refused_before_anything_is_written(tmp_path, capsys, change, message):
    exp = write_experiment(tmp_path, online_experiment().replace(*change), "bad.toml")
    assert cli.main(["run", str(exp), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


ONLINE_STRATEGIES = [("finetune", {"lr": 0.05}), ("protomemory", {"embedding_dim": 8, "meta_iterations": 2}),
                     ("matching", {"embedding_dim": 8, "meta_iterations": 2}),
                     ("maml", {"meta_iterations": 2, "online_adaptation": "reset"}),
                     ("maml", {"meta_iterations": 2, "online_adaptation": "accumulate", "anil": True}),
                     ("maml", {"meta_iterations": 2, "online_adaptation": "frozen"}),
                     ("metasgd", {"meta_iterations": 2}), ("reptile", {"meta_iterations": 2})]


@pytest.mark.parametrize("name, params", ONLINE_STRATEGIES, ids=lambda v: str(v))
def test_every_online_strategy_resumes_mid_stream_bit_identical(name, params, interrupted_online_run):
    import scenarios
    import strategies

    stream = scenarios.build("switching-sinusoid", {"length": 40, "hazard": 0.2}, seed=0) \
        if name in ("maml", "metasgd", "reptile", "finetune") else \
        scenarios.build("online", {"source": "split-digits", "source_params": {"num_tasks": 2}}, seed=0)

    def fresh():
        strategy = strategies.build(name, params)
        torch.manual_seed(0)
        return strategy, strategies.build_model("mlp", {"hidden": [8]}, strategy.model_spec(stream.spec))

    settings, online = EvalSettings(episodes=3, adapt_steps=1), OnlineSettings(eval_every=15)
    clean, resumed = interrupted_online_run(stream, fresh, settings, online, batches=11)
    assert np.isfinite(clean.online["correct"]).all()
    assert resumed.online["correct"].tobytes() == clean.online["correct"].tobytes()
    assert resumed.acc.tobytes() == clean.acc.tobytes() and resumed.loss.tobytes() == clean.loss.tobytes()
