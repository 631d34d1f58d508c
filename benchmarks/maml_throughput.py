"""Second-order MAML meta-batches per second: ours, its vmap path, a per-task loop, ``higher``, TorchOpt.

The sinusoid case is the MAML paper's regression setting: MLP 1-40-40-1 (ReLU), meta-batch 25,
K = 10 support and 10 query points per function, one inner step (alpha = 0.01), exact
second-order meta-gradient, Adam outer step. The implementations train their own copy of
the same initial model on meta-batches drawn from the same task with the same sampler
(``Task.episodes``), so each meta-iteration costs the same drawing and the same Adam step:

* ``ours``: :meth:`strategies.maml.MAML.learn`, the library's own strategy, unchanged: for
  these models its batched-parameter path (``strategies/batched.py``: the parameters expanded
  over the meta-batch, batched matrix products and grouped convolutions, one
  ``torch.autograd.grad`` per inner step).
* ``vmap``: the same strategy with :func:`strategies.episodic.meta_objective`'s ``batched=False``,
  the path every other model takes (and the only one before issue 16): one ``vmap`` over the
  meta-batch of an inner loop written with ``torch.func.grad``.
* ``loop``: the textbook implementation, a Python loop over the tasks of the meta-batch, each
  adapted with ``torch.autograd.grad(..., create_graph=True)`` through ``functional_call``.
* ``higher``: the same loop over tasks with the ``higher`` library's ``innerloop_ctx`` (its
  own MAML example's pattern); the column is skipped, and the output says so, if ``higher``
  does not import.
* ``torchopt``: the same loop over tasks with TorchOpt's differentiable ``torchopt.MetaSGD``,
  the parameters and the inner optimiser's state recovered after each task
  (``extract_state_dict`` / ``recover_state_dict``), as in TorchOpt's MAML examples; skipped,
  with the reason printed, if ``torchopt`` does not import. ``pip install -e '.[bench]'``
  installs both baselines.

Before timing, the script computes the meta-gradient of one fixed meta-batch with each
implementation from the same parameters and checks they agree: the largest difference of any
component, divided by the largest component of the loop's meta-gradient, must be at most
``--tol64`` (default 1e-10) in float64, where all compute the same number up to
rounding, and at most ``--tol32`` in float32, the precision that is timed (batched kernels sum
in another order than per-task ones). The float32 default is 1e-3 on the sinusoid (measured:
2e-7) and 1e-2 on conv-4, where the 5-item batch statistics of one-shot support sets amplify
rounding: measured on the CPU, ours 9e-5 and the vmap path 2.1e-3 of the largest component,
while float64 agrees to 5e-15.

Timing: ``--trials`` rounds; in each, every implementation runs ``--iterations``
meta-iterations back to back (the order rotates between rounds, so a burst of load on a
shared machine does not always hit the same one). The best round counts (the least disturbed
by other jobs); the median is printed beside it, and the ratios are computed from both wall
time and the process's CPU time, which other jobs disturb less.

With ``--device cuda`` (or ``auto`` on a machine with CUDA) the script also runs, on the GPU,
a conv-4 case: a meta-batch of 32 five-way one-shot tasks with 15 query images per class,
28x28 inputs (random images in a pool of 100 classes: speed does not depend on the pixels),
one inner step (alpha = 0.4, as Finn et al. on Omniglot). ``--conv4`` forces it on the CPU.
``--cases`` picks the cases and ``--contenders`` the implementations (``ours`` always; the
loop's meta-gradient is computed for the check either way): on the CPU a conv-4
meta-iteration takes seconds, so ``--cases conv4 --contenders ours vmap --iterations 1``
compares ours with the vmap path alone in a few minutes.

    python benchmarks/maml_throughput.py [--iterations 20] [--trials 7] [--threads 1]
                                         [--device cpu|cuda|auto] [--conv4] [--tol32 TOL] [--tol64 1e-10]
                                         [--cases sinusoid conv4] [--contenders ours vmap loop higher torchopt]
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

import scenarios
import strategies
from scenarios.base import Episodes, LabelledPool, StreamSpec, Task
from strategies.base import task_loss
from strategies.batched import batched_forward
from strategies.episodic import meta_backward, meta_objective

try:
    import higher
except ImportError as error:  # an optional baseline: the benchmark runs without it
    higher, HIGHER_ERROR = None, f"{type(error).__name__}: {error}"
else:
    HIGHER_ERROR = ""

try:
    import torchopt
except ImportError as error:  # the same
    torchopt, TORCHOPT_ERROR = None, f"{type(error).__name__}: {error}"
else:
    TORCHOPT_ERROR = ""


@dataclass
class Case:
    """One benchmark setting: a task to draw meta-batches from and MAML's options on it."""

    name: str
    task: Task
    spec: StreamSpec
    make_model: Callable[[], nn.Module]
    meta_batch: int
    inner_lr: float
    meta_lr: float
    tol32: float  # the float32 gradient check's default tolerance


def sinusoid_case() -> Case:
    stream = scenarios.build("sinusoid", {"num_tasks": 1, "shots": 10, "query": 10}, seed=0)
    return Case("sinusoid MLP 1-40-40-1, 25 tasks, K=10", stream[0].training_view(), stream.spec,
                lambda: strategies.build_model("mlp", {"hidden": [40, 40]}, stream.spec),
                meta_batch=25, inner_lr=0.01, meta_lr=0.001, tol32=1e-3)


def conv4_case() -> Case:
    g = torch.Generator().manual_seed(0)
    classes, per_class = 100, 20
    pool = LabelledPool(torch.rand(classes * per_class, 1, 28, 28, generator=g),
                        torch.arange(classes).repeat_interleave(per_class))
    task = Task(id=0, name="random images", classes=tuple(range(classes)), train=pool, test=None,
                protocol="few-shot", output_size=5, ways=5)
    spec = StreamSpec(name="random-images", kind="classification", protocol="few-shot", input_shape=(1, 28, 28),
                      output_size=5, num_tasks=1, shots=1, query=15, ways=5)
    return Case("conv-4 28x28, 32 tasks 5-way 1-shot, 15 query/class", task, spec,
                lambda: strategies.build_model("conv4", {}, spec), meta_batch=32, inner_lr=0.4, meta_lr=0.001,
                tol32=1e-2)


# -- the baselines: one task of the meta-batch at a time ---------------------------------------

def loop_backward(model: nn.Module, eps: Episodes, lr: float, kind: str) -> None:
    """Accumulate the meta-gradient of ``eps`` in ``.grad`` with a Python loop over tasks.

    One ``backward`` of the summed query losses: measured slightly faster here than one per task.
    """
    params = dict(model.named_parameters())
    total = torch.zeros((), device=eps.query_x.device)
    for e in range(len(eps)):
        loss = task_loss(functional_call(model, params, (eps.support_x[e],)), eps.support_y[e], kind)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        fast = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
        total = total + task_loss(functional_call(model, fast, (eps.query_x[e],)), eps.query_y[e], kind)
    (total / len(eps)).backward()


def higher_backward(model: nn.Module, eps: Episodes, lr: float, kind: str) -> None:
    """The same with ``higher``: a differentiable SGD step on a patched copy per task."""
    inner = torch.optim.SGD(model.parameters(), lr=lr)
    for e in range(len(eps)):
        with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
            diffopt.step(task_loss(fmodel(eps.support_x[e]), eps.support_y[e], kind))
            query = task_loss(fmodel(eps.query_x[e]), eps.query_y[e], kind)
            (query / len(eps)).backward()


def torchopt_backward(model: nn.Module, eps: Episodes, lr: float, kind: str) -> None:
    """The same with TorchOpt: ``MetaSGD`` steps the module's parameters differentiably in
    place; the meta-parameters (and the optimiser's state) are put back after each task."""
    inner = torchopt.MetaSGD(model, lr=lr)
    start = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
    inner_start = torchopt.extract_state_dict(inner, by="reference")
    for e in range(len(eps)):
        inner.step(task_loss(model(eps.support_x[e]), eps.support_y[e], kind))
        (task_loss(model(eps.query_x[e]), eps.query_y[e], kind) / len(eps)).backward()
        torchopt.recover_state_dict(model, start)
        torchopt.recover_state_dict(inner, inner_start)


class Contender:
    """A model copy with its Adam optimiser, trained by ``backward`` on drawn meta-batches."""

    def __init__(self, case: Case, model: nn.Module, device: torch.device,
                 backward: Callable[[nn.Module, Episodes, float, str], None]):
        self.case, self.device, self.backward = case, device, backward
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=case.meta_lr)
        self.generator = torch.Generator().manual_seed(0)

    def gradient(self, eps: Episodes) -> list[Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(self.model, eps, self.case.inner_lr, self.case.spec.kind)
        return [p.grad.clone() for p in self.model.parameters()]

    def train(self, iterations: int) -> None:
        c = self.case
        for _ in range(iterations):
            eps = c.task.episodes("train", c.meta_batch, c.spec.shots, c.spec.query, self.generator).to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            self.backward(self.model, eps, c.inner_lr, c.spec.kind)
            self.optimizer.step()


class Ours:
    """The library's MAML strategy; ``train`` is its own ``learn``. With ``batched=False`` its
    meta-loss is :func:`meta_objective`'s vmap path (the library before issue 16)."""

    def __init__(self, case: Case, model: nn.Module, device: torch.device, iterations: int, batched: bool = True):
        self.maml = strategies.build("maml", {"inner_lr": case.inner_lr, "inner_steps": 1, "meta_lr": case.meta_lr,
                                              "meta_batch_size": case.meta_batch, "meta_iterations": iterations})
        self.maml.setup(model, case.spec, device, seed=0)
        self.task, self.iterations = case.task, iterations
        if not batched:
            if batched_forward(self.maml.model) is None:
                raise AssertionError("the vmap column needs a model the batched path covers, or it times ours twice")
            m = self.maml
            # An instance attribute shadows the method; learn calls self.meta_loss.
            m.meta_loss = lambda eps: meta_objective(  # type: ignore[method-assign]
                m.model, dict(m.model.named_parameters()), dict(m.model.named_buffers()), eps,
                steps=m.config.inner_steps, lr=m.inner_lr(), kind=m.spec.kind, batched=False)

    def gradient(self, eps: Episodes) -> list[Tensor]:
        self.maml.optimizer.zero_grad(set_to_none=True)
        meta_backward(self.maml.meta_loss, eps, None)
        return [p.grad.clone() for p in self.maml.model.parameters()]

    def train(self, iterations: int) -> None:
        assert iterations == self.iterations, "the strategy was built for a fixed number of meta-iterations"
        self.maml.learn(self.task)


CONTENDERS = ("ours", "vmap", "loop", "higher", "torchopt")


def contenders(case: Case, initial: nn.Module, device: torch.device, iterations: int,
               names: tuple[str, ...] = CONTENDERS) -> dict:
    """Each implementation in ``names`` (an optional baseline only if it imports) with its own copy of ``initial``."""
    build = {"ours": lambda m: Ours(case, m, device, iterations),
             "vmap": lambda m: Ours(case, m, device, iterations, batched=False),
             "loop": lambda m: Contender(case, m, device, loop_backward),
             "higher": lambda m: Contender(case, m, device, higher_backward),
             "torchopt": lambda m: Contender(case, m, device, torchopt_backward)}
    missing = {"higher": higher is None, "torchopt": torchopt is None}
    return {n: build[n](copy.deepcopy(initial)) for n in CONTENDERS if n in names and not missing.get(n)}


def check_gradients(case: Case, initial: nn.Module, device: torch.device, tolerances: dict[torch.dtype, float],
                    names: tuple[str, ...] = CONTENDERS) -> dict[torch.dtype, dict[str, float]]:
    """Each implementation's meta-gradient of one fixed meta-batch against the loop's, per dtype.

    The deviation is the largest difference of any component divided by the largest component
    of the loop's meta-gradient; it must not exceed ``tolerances[dtype]``. Returns the deviations.
    """
    eps = case.task.episodes("train", case.meta_batch, case.spec.shots, case.spec.query,
                             torch.Generator().manual_seed(1))
    deviations = {}
    for dtype, tol in tolerances.items():
        part = Episodes(*(t.to(device, dtype) if t.is_floating_point() else t.to(device)
                          for t in (eps.support_x, eps.support_y, eps.query_x, eps.query_y)))
        implementations = contenders(case, copy.deepcopy(initial).to(dtype), device, 1, ("loop", *names))
        # cuDNN's default TF32 convolutions round to 10 bits, which would swamp the comparison.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            gradients = {name: implementation.gradient(part) for name, implementation in implementations.items()}
        reference = gradients.pop("loop")
        scale = max(float(g.abs().max()) for g in reference)
        deviations[dtype] = {}
        for name, got in gradients.items():
            deviation = max(float((a - b).abs().max()) for a, b in zip(got, reference, strict=True)) / scale
            if deviation > tol:
                raise AssertionError(f"{name}: {dtype} meta-gradient differs from the loop's by {deviation:.1e} "
                                     f"of its largest component (tolerance {tol:g})")
            deviations[dtype][name] = deviation
    return deviations


def timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fn()``, the device synchronised."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(case: Case, device: torch.device, iterations: int, trials: int, tolerances: dict[torch.dtype, float],
          names: tuple[str, ...] = CONTENDERS) -> None:
    torch.manual_seed(0)
    initial = case.make_model()
    deviations = check_gradients(case, initial, device, tolerances, names)

    timed_ones = contenders(case, initial, device, iterations, names)
    order = list(timed_ones)
    for name in order:  # warm-up: first calls allocate and initialise
        timed_ones[name].train(iterations)
    wall = {n: [] for n in order}
    cpu = {n: [] for n in order}
    for trial in range(trials):
        for name in order[trial % len(order):] + order[:trial % len(order)]:
            w, c = timed(functools.partial(timed_ones[name].train, iterations), device)
            wall[name].append(w / iterations)
            cpu[name].append(c / iterations)

    print(f"\n{case.name} on {device.type}: {iterations} meta-iterations x {trials} trials")
    for dtype, found in deviations.items():
        print(f"meta-gradient vs the loop's in {str(dtype).removeprefix('torch.')}, largest difference / largest "
              f"component: " + ", ".join(f"{n} {d:.1e}" for n, d in found.items())
              + f" (tolerance {tolerances[dtype]:g})")
    print(f"{'':<8} {'best it/s':>10} {'median it/s':>12} {'CPU it/s':>9}   "
          f"{'ours/x (best)':>13} {'(median)':>9} {'(CPU)':>7}")
    for n in order:
        ratios = (min(wall[n]) / min(wall["ours"]), statistics.median(wall[n]) / statistics.median(wall["ours"]),
                  min(cpu[n]) / min(cpu["ours"]))
        print(f"{n:<8} {1 / min(wall[n]):>10.4g} {1 / statistics.median(wall[n]):>12.4g} {1 / min(cpu[n]):>9.4g}   "
              f"{ratios[0]:>12.1f}x {ratios[1]:>8.1f}x {ratios[2]:>6.1f}x")
    if higher is None and "higher" in names:
        print(f"higher: not run ({HIGHER_ERROR})")
    if torchopt is None and "torchopt" in names:
        print(f"torchopt: not run ({TORCHOPT_ERROR})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20, help="meta-iterations per timed trial")
    p.add_argument("--trials", type=int, default=7, help="timed trials per implementation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--conv4", action="store_true", help="run the conv-4 case on the CPU too")
    p.add_argument("--cases", nargs="+", choices=["sinusoid", "conv4"],
                   help="the cases to run (default: sinusoid, and conv4 on CUDA or with --conv4)")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                   help="the implementations to time (default: all; ours always; the loop's "
                        "meta-gradient is always the reference of the check)")
    p.add_argument("--tol32", type=float, help="tolerance of the float32 gradient check (default: 1e-3 on the "
                                              "sinusoid, 1e-2 on conv-4)")
    p.add_argument("--tol64", type=float, default=1e-10, help="tolerance of the float64 gradient check")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), device {device}, "
          f"higher {'installed' if higher is not None else 'not available'}, "
          f"torchopt {torchopt.__version__ if torchopt is not None else 'not available'}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    names = ("ours", *args.contenders)
    cases = args.cases or ["sinusoid", *(["conv4"] if device.type == "cuda" or args.conv4 else [])]
    for name in cases:
        case = {"sinusoid": sinusoid_case, "conv4": conv4_case}[name]()
        tolerances = {torch.float64: args.tol64, torch.float32: case.tol32 if args.tol32 is None else args.tol32}
        bench(case, device, args.iterations, args.trials, tolerances, names)
    if "conv4" not in cases:
        print("\nconv-4 case: not run (no CUDA device; --conv4 or --cases conv4 runs it on the CPU)")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
