"""SHA-256 of every array that a set of small experiments writes: run it before and after a
change that should not change results, and compare the two outputs line by line.

It runs the quickstart and one small experiment per stream family (every registered native
strategy appears in at least one), each through ``lifelong run``, and prints one line per
experiment and array of ``tensors.npz``: ``experiment/array  sha256``. Timings are not in
those arrays, so two runs of the same code on the same machine and thread count print the
same lines.

    python benchmarks/tensor_digests.py --data-root ../shared/data > before.txt
    # ... the change ...
    python benchmarks/tensor_digests.py --data-root ../shared/data > after.txt
    diff before.txt after.txt && echo bit-identical
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

COMMON = 'seeds = [0]\ndevice = "cpu"\nthreads = 1\n'
SMALL_EVAL = "[evaluation]\nepisodes = 4\nadapt_steps = 2\n"

MLP = '[model]\nname = "mlp"\nhidden = [32]\n'


def experiment(scenario: str, strategies: str, model: str = MLP, online: str = "") -> str:
    """A small experiment file: one seed on one CPU thread, 4 evaluation episodes and K = 2;
    ``scenario`` is the body of its ``[scenario]`` table, ``strategies`` its strategy tables."""
    return (COMMON + "[scenario]\n" + scenario + model + SMALL_EVAL
            + (f"[online]\n{online}" if online else "") + strategies)


EXPERIMENTS = {
    "split-digits": experiment("""name = "split-digits"
num_tasks = 3
classes_per_task = 2
""", """[strategies.finetune]
epochs = 1
[strategies.joint]
epochs = 1
[strategies.maml]
meta_iterations = 5
[strategies.metasgd]
meta_iterations = 5
[strategies.reptile]
meta_iterations = 5
[strategies.matching]
meta_iterations = 5
[strategies.protomemory]
embedding_dim = 10
meta_iterations = 5
"""),
    "rotated-digits": experiment("""name = "rotated-digits"
num_tasks = 3
""", """[strategies.lamaml]
[strategies.mer]
[strategies.oml]
meta_iterations = 3
[strategies.anml]
meta_iterations = 3
"""),
    "permuted-mnist": experiment("""name = "permuted-mnist"
num_tasks = 2
train_per_task = 200
test_per_task = 1000
""", """[strategies.finetune]
epochs = 1
"""),
    "split-mnist": experiment("""name = "split-mnist"
num_tasks = 2
protocol = "task-incremental"
shuffle_classes = true
train_per_class = 100
test_per_class = 50
""", """[strategies.finetune]
epochs = 1
"""),
    "split-fashion-mnist": experiment("""name = "split-fashion-mnist"
num_tasks = 2
""", """[strategies.protomemory]
embedding_dim = 10
meta_iterations = 5
"""),
    "sinusoid": experiment("""name = "sinusoid"
num_tasks = 2
""", """[strategies.maml]
meta_iterations = 5
[strategies.reptile]
meta_iterations = 5
""", model='''[model]
name = "mlp"
hidden = [20, 20]
'''),
    "omniglot-alphabets": experiment("""name = "omniglot-alphabets"
num_tasks = 2
ways = 5
shots = 1
query = 2
""", """[strategies.maml]
meta_iterations = 2
meta_batch_size = 2
[strategies.snail]
meta_iterations = 2
meta_batch_size = 2
[strategies.leo]
meta_iterations = 2
meta_batch_size = 2
""", model='''[model]
name = "conv4"
'''),
    "online-rotated-digits": experiment("""name = "online"
source = "rotated-digits"
source_params = { num_tasks = 2 }
batch_size = 10
examples_per_task = 100
""", """[strategies.finetune]
[strategies.lamaml]
[strategies.mer]
[strategies.continual_maml]
meta_iterations = 3
""", online="eval_every = 5\n"),
    "osaka": experiment("""name = "osaka"
ways = 5
shots = 1
length = 30
""", """[strategies.continual_maml]
meta_iterations = 3
[strategies.protomemory]
embedding_dim = 10
meta_iterations = 3
""", online="eval_every = 10\n"),
    "schedule": experiment("""name = "schedule"
parts = [{ name = "rotated-digits", num_tasks = 2 }, { name = "permuted-digits", num_tasks = 2 }]
order = "seeded"
sequence = [0, 1, 2, 0]
""", """[strategies.finetune]
epochs = 1
"""),
    "omniglot-fewshot": experiment("""name = "omniglot-fewshot"
query = 2
""", """[strategies.reptile]
meta_iterations = 2
meta_batch_size = 2
""", model='''[model]
name = "conv4"
'''),
    "switching-sinusoid": experiment("""name = "switching-sinusoid"
length = 60
""", """[strategies.maml]
meta_iterations = 3
[strategies.finetune]
""", model='''[model]
name = "mlp"
hidden = [20, 20]
''', online="eval_every = 20\n"),
}


def digests(run_dir: Path) -> list[tuple[str, str]]:
    """(array name, SHA-256 of its dtype, shape and bytes) for each array of ``tensors.npz``."""
    with np.load(run_dir / "tensors.npz") as arrays:
        out = []
        for name in sorted(arrays.files):
            a = np.ascontiguousarray(arrays[name])
            h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
            out.append((name, h.hexdigest()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("LIFELONG_DATA"), help="folder of the data files")
    p.add_argument("--only", nargs="+", help="experiments to run (default: all, and the quickstart)")
    args = p.parse_args()
    from simulator import cli

    names = args.only or ["quickstart", *EXPERIMENTS]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name == "quickstart":
                path = ROOT / "configs" / "quickstart.toml"
            else:
                path = Path(tmp) / f"{name}.toml"
                path.write_text(f'name = "{name}"\n' + EXPERIMENTS[name])
            out = Path(tmp) / "runs" / name
            argv = ["run", str(path), "--out", str(out), "--quiet"]
            if args.data_root:
                argv += ["--data-root", args.data_root]
            code = cli.main(argv)
            if code != 0:
                sys.exit(f"{name}: lifelong run exited with {code}")
            for array, digest in digests(out):
                print(f"{name}/{array}  {digest}", flush=True)


if __name__ == "__main__":
    main()
