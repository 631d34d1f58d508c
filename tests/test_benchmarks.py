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


def trained_maml(blocks: int | None):
    """MAML after 7 meta-iterations on split-digits: in one ``learn`` call, or in blocks."""
    stream = scenarios.build("split-digits", {"num_tasks": 1, "protocol": "task-incremental"}, seed=0)
    maml = strategies.build("maml", {"meta_iterations": blocks or 7, "meta_batch_size": 3, "inner_steps": 1})
    torch.manual_seed(0)
    maml.setup(strategies.build_model("mlp", {"hidden": [16]}, stream.spec), stream.spec, "cpu", seed=0)
    task = stream[0].training_view()
    if blocks is None:
        maml.learn(task)
    else:
        meta_train(maml, task, 7, blocks)
    return maml


def test_meta_training_in_blocks_takes_the_same_steps_as_one_learn_call(capsys):
    whole, blocked = trained_maml(None), trained_maml(3)
    for (name, a), b in zip(whole.model.state_dict().items(), blocked.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(whole.generator.get_state(), blocked.generator.get_state())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["3", "6", "7"]      # one progress line per block
    assert "(mean of the last 1)" in lines[-1]


def test_omniglot_reproduction_runs_end_to_end_on_a_tiny_budget(data_root, tmp_path):
    rows = tmp_path / "rows.jsonl"
    command = [sys.executable, str(BENCHMARKS / "reproduce_omniglot.py"), "--methods", "protonet", "maml",
               "--ways", "5", "--shots", "1", "--budget", "cpu", "--meta-iterations", "2", "--log-every", "1",
               "--episodes", "12", "--chunk", "5", "--device", "cpu", "--data-root", str(data_root),
               "--json", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["method"], r["strategy"]) for r in results] == [("protonet", "protomemory"), ("maml", "maml")]
    protonet, maml = results
    assert protonet["train_ways"] == 60 and maml["train_ways"] == 5               # the papers' training episodes
    assert protonet["published"] == 98.8 and maml["published"] == 98.7
    assert maml["params"]["inner_lr"] == 0.4 and maml["params"]["meta_batch_size"] == 16
    for r in results:
        assert r["budget"] == "cpu + meta_iterations=2" and r["params"]["meta_iterations"] == 2
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
