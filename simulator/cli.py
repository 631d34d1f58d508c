"""The ``lifelong`` command line.

    lifelong run EXPERIMENT.toml [--set key=value ...] [--seeds 0,1,2] [--device cpu|cuda|auto] [--out DIR] [--quiet]
    lifelong list

Exit status: 0 on success; 2 for a user mistake (bad experiment file, bad option, CUDA asked
for and absent), with a one-paragraph message and no traceback; 1 when a run fails (for
example a diverging loss), after saving every run that finished.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

EXIT_USAGE = 2


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifelong", description="Lifelong-learning simulator for meta-learning strategies.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment file and write its run directory",
                       description="Run every strategy x seed of an experiment file; write config.json, "
                                   "results.json, tensors.npz and report.md to the output directory.")
    r.add_argument("experiment", help="experiment file (TOML)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. strategies.finetune.lr=0.05 or scenario.num_tasks=3 (repeatable)")
    r.add_argument("--seeds", type=_seeds, help="comma-separated seeds, replacing the file's (e.g. 0,1,2)")
    r.add_argument("--device", choices=["cpu", "cuda", "auto"], help="replace the file's device")
    r.add_argument("--out", help="output directory (default: reports/<experiment name>)")
    r.add_argument("--quiet", action="store_true", help="print only the final line")
    sub.add_parser("list", help="list strategies, scenarios and models with their parameters and defaults")
    return p


def _type_name(annotation) -> str:
    if annotation is None:
        return "None"
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _describe_params(model, indent: str = "      ") -> list[str]:
    lines = []
    for name, f in model.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()
        head = f"{name}: {_type_name(f.annotation)} = {default!r}"
        lines.append(f"{indent}{head:<46} {f.description or ''}".rstrip())
    return lines


def list_command() -> str:
    import scenarios
    import strategies

    out = ["Scenarios (experiment file: [scenario] name = ...)"]
    for name in scenarios.available():
        fam = scenarios.family(name)
        out += [f"  {name}: {fam.description}"] + _describe_params(fam.params)
    out += ["", "Strategies (experiment file: [strategies.<label>], strategy = name, default: the label)"]
    for name in strategies.available():
        cls = strategies.strategy_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"  {name}: {doc}"] + _describe_params(cls.Config)
    out += ["", "Models (experiment file: [model] name = ..., or [strategies.<label>.model])"]
    for name in strategies.MODELS.names():
        cls = strategies.MODELS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"  {name}: {doc}"] + _describe_params(cls.Params)
    return "\n".join(out)


def run_command(args) -> int:
    from simulator.config import ConfigError, load_experiment
    from simulator.runner import resolve_device, run_experiment
    from strategies.base import DivergenceError

    try:
        experiment = load_experiment(args.experiment, args.overrides, args.seeds, args.device)
        resolve_device(experiment.device)
    except (ConfigError, ValueError) as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else Path("reports") / experiment.name
    try:
        run_experiment(experiment, out, quiet=args.quiet)
    except DivergenceError as err:
        print(f"lifelong: run failed: {err}. Finished runs are saved in {out}.", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"lifelong: cannot write the run directory {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lifelong: interrupted; finished runs are saved in {out}.", file=sys.stderr)
        return 130
    print(f"report: {out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        print(list_command())
        return 0
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
