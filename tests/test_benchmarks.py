"""The reproduction scripts in benchmarks/: their training helper and a tiny-budget run on real data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scenarios
import strategies

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from metatrain import meta_train  # noqa: E402


SCHEDULED = {  # strategies whose steps depend on the iteration's place in the task
    "maml": {"meta_batch_size": 3, "inner_steps": 1, "meta_lr_schedule": "cosine"},
    "protomemory": {"meta_batch_size": 2, "embedding_dim": 8, "lr_schedule": "cosine"},
    "reptile": {"meta_batch_size": 2, "inner_steps": 2, "epsilon_final": 0.0},
}


def trained(name: str, progress_every: int | None):
    """The strategy after 7 meta-iterations on split-digits: one ``learn`` call, or ``meta_train``."""
    stream = scenarios.build("split-digits", {"num_tasks": 1, "protocol": "task-incremental"}, seed=0)
    s = strategies.build(name, {**SCHEDULED[name], "meta_iterations": 7})
    torch.manual_seed(0)
    s.setup(strategies.build_model("mlp", {"hidden": [16]}, s.model_spec(stream.spec)), stream.spec, "cpu", seed=0)
    task = stream[0].training_view()
    if progress_every is None:
        s.learn(task)
    else:
        meta_train(s, task, 7, progress_every)
    return s


@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_meta_training_with_progress_takes_the_steps_of_one_learn_call(name, capsys):
    # With a schedule, learn called on blocks of 3 would restart it twice and differ from this.
    whole, shown = trained(name, None), trained(name, 3)
    for (key, a), b in zip(whole.model.state_dict().items(), shown.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert torch.equal(whole.generator.get_state(), shown.generator.get_state())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["3", "6", "7"]      # a progress line every 3, and the last
    assert "(mean of the last 3)" in lines[0] and "(mean of the last 1)" in lines[-1]
    assert shown.config.meta_iterations == 7


def test_omniglot_reproduction_runs_end_to_end_on_a_tiny_budget(data_root, tmp_path):
    rows = tmp_path / "rows.jsonl"
    command = [sys.executable, str(BENCHMARKS / "reproduce_omniglot.py"), "--methods", "protonet", "maml",
               "--ways", "5", "--shots", "1", "--budget", "cpu", "--meta-iterations", "2", "--log-every", "1",
               "--lr-schedule", "cosine", "--meta-lr-schedule", "cosine", "--episodes", "12", "--chunk", "5", "--device", "cpu", "--data-root", str(data_root),
               "--json", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["method"], r["strategy"]) for r in results] == [("protonet", "protomemory"), ("maml", "maml")]
    protonet, maml = results
    assert protonet["train_ways"] == 60 and maml["train_ways"] == 5               # the papers' training episodes
    assert protonet["published"] == 98.8 and maml["published"] == 98.7
    assert maml["params"]["inner_lr"] == 0.4 and maml["params"]["meta_batch_size"] == 16
    # each override reaches the strategies that have the option, and only those
    assert protonet["budget"] == "cpu + meta_iterations=2, lr_schedule=cosine"
    assert maml["budget"] == "cpu + meta_iterations=2, meta_lr_schedule=cosine"
    assert protonet["params"]["lr_schedule"] == maml["params"]["meta_lr_schedule"] == "cosine"
    for r in results:
        assert r["params"]["meta_iterations"] == 2
        assert r["test_episodes"] == 12 and r["device"] == "cpu" and r["seed"] == 0
        assert len(r["accuracy_by_step"]) == r["adapt_steps"] + 1
        assert r["accuracy"] == pytest.approx(r["accuracy_by_step"][-1])
        # 12 episodes of 25 query images: every accuracy is a multiple of 1/300
        assert (r["accuracy"] * 3) == pytest.approx(round(r["accuracy"] * 3))
        assert 0 < r["ci95"] < 100 and r["train_wall_s"] > 0
    assert "| MAML | 5-way 1-shot |" in done.stdout and "      2 iterations  loss" in done.stdout


@pytest.mark.parametrize("options,message", [
    (["--episodes", "0"], "argument --episodes: must be at least 1, got 0"),
    (["--ways", "five"], "argument --ways: must be a whole number, got 'five'"),
    (["--shots", "5", "--query", "16"], "5-shot (cpu budget): shots + query = 21 exceeds the 20 images per class"),
    (["--methods", "reptile", "--shots", "10"],                         # Reptile trains on 10 - shots query images
     "row reptile 5-way 10-shot (cpu budget): query: Input should be greater than 0"),
    (["--methods", "maml", "--inner-lr", "-1"], "row maml 5-way 1-shot (cpu + inner_lr=-1.0 budget): inner_lr: "),
    (["--data-root", "{tmp}/nothing-here"], "nothing-here"),
    (["--lr-schedule", "linear"], "argument --lr-schedule: invalid choice: 'linear'"),
])
def test_omniglot_reproduction_refuses_bad_input_before_training(options, message, tmp_path):
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    command = [sys.executable, str(BENCHMARKS / "reproduce_omniglot.py"), "--budget", "cpu", "--device", "cpu",
               "--data-root", str(tmp_path), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "iterations" not in done.stdout                                  # nothing trained


def test_seed_summaries_give_student_t_intervals_over_seeds():
    # three seeds 70, 72, 74: mean 72, sd 2, half-width t(0.975, 2) * 2 / sqrt(3) = 4.97
    import reproduce_lamaml
    import reproduce_mer
    import reproduce_oml

    lamaml = [{"dataset": "rotated-mnist", "method": "lamaml", "impl": "native", "seed": s, "RA": ra, "LA": 80.0,
               "BTI": -8.0, "s_per_batch": 0.01, "params": {"first_order": False, "glances": 5}}
              for s, ra in enumerate((70.0, 72.0, 74.0))]
    line = reproduce_lamaml.seed_summary(lamaml).splitlines()[-1]
    assert "| 72.00 ± 4.97 | 77.4 | 80.00 ± 0.00 |" in line and "| second | 5 |" in line and "0, 1, 2" in line
    mer = [{"benchmark": "permutations", "variant": "mer", "seed": s, "RA": ra, "LA": 80.0, "BTI": -8.0,
            "online_accuracy": 70.0, "ms_per_batch": 10.0} for s, ra in enumerate((70.0, 72.0, 74.0))]
    assert "| 72.00 ± 4.97 | 73.0 |" in reproduce_mer.seed_summary(mer)
    oml = [{"method": "oml", "classes": 10, "seed": s, "accuracy": a} for s, a in enumerate((0.70, 0.72, 0.74))]
    assert "72.0 ±  5.0  (3 seeds)" in reproduce_oml.summary_table(oml)
