"""The ``lifelong`` command line.

    lifelong run EXPERIMENT.toml [--set key=value ...] [--seeds 0,1,2] [--device cpu|cuda|auto] [--out DIR] [--quiet]
    lifelong report RUN_DIR [RUN_DIR ...] [--out DIR] [--compare A,B ...]
    lifelong report SWEEP_DIR [--out DIR]
    lifelong sweep EXPERIMENT.toml [--data-root DIR] [--workers N] ...
    lifelong export RUN_OR_SWEEP_DIR [--out FILE.csv]
    lifelong list [NAME]
    lifelong data download NAME [--data-root DIR] [--timeout SECONDS]
    lifelong data check [NAME ...] [--data-root DIR]

Exit status: 0 on success; 2 for a user mistake (bad experiment file, bad option, CUDA asked
for and absent, a data file missing or damaged), with a one-paragraph message and no
traceback; 1 when a run fails (for example a diverging loss), after saving every run that
finished, or when ``data download`` cannot fetch a file (no internet, server error).
"""

from __future__ import annotations

import argparse
import hashlib
import os
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifelong", description="Lifelong-learning simulator for meta-learning strategies.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an experiment file and write its run directory",
                       description="Run every strategy x seed of an experiment file; write config.json, "
                                   "results.json, tensors.npz and the report (index.html, report.md) to the "
                                   "output directory.")
    _experiment_options(r)
    r.add_argument("--data-root", metavar="DIR",
                   help="folder of the data files, replacing the file's data_root and $LIFELONG_DATA (default ./data)")
    r.add_argument("--out", help="output directory (default: reports/<experiment name>)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: keep finished runs, resume the "
                        "interrupted one from its last checkpoint (between tasks or inside one)")
    r.add_argument("--overwrite", action="store_true",
                   help="first remove the results, checkpoints and report already in --out (of this or "
                        "another experiment); without it such a directory is refused")
    r.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="also checkpoint inside a task every N iterations (default: by time only)")
    r.add_argument("--checkpoint-minutes", type=_positive_float, default=5.0, metavar="M",
                   help="checkpoint inside a task when M minutes passed since the last checkpoint (default 5)")
    r.add_argument("--log-every", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="without a terminal, print a progress line inside a task every SECONDS (default 30)")
    r.add_argument("--quiet", action="store_true", help="print only the final line")
    sw = sub.add_parser("sweep", help="run the grid of an experiment file's [sweep] table as trials",
                        description="Expand the [sweep] grid x strategies x seeds into trials and run the "
                                    "unfinished ones; results go to results.db, trials/<id>/ and summary.md. "
                                    "Run it again to skip finished trials and resume interrupted ones.")
    _experiment_options(sw)
    sw.add_argument("--data-root", metavar="DIR",
                    help="folder of the data files, replacing the file's data_root and $LIFELONG_DATA (default ./data)")
    sw.add_argument("--out", help="output directory (default: reports/<experiment name>-sweep)")
    sw.add_argument("--workers", type=int, default=1, help="parallel trials (default 1: in this process)")
    sw.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="local process pool (default) or Ray tasks")
    sw.add_argument("--address", help="address of an existing Ray cluster (with --backend ray), e.g. 10.0.0.5:6379")
    sw.add_argument("--quiet", action="store_true", help="print only the final lines")
    ex = sub.add_parser("export", help="write the metrics of a run or sweep directory as CSV",
                        description="One row per metric, strategy, seed and k (and trial, for a sweep: one "
                                    "column per grid key), from a run directory's results.json or a sweep "
                                    "directory's results.db.")
    ex.add_argument("directory", help="a run directory (holding results.json) or a sweep directory (results.db)")
    ex.add_argument("--out", help="CSV file (default: <directory>/metrics.csv)")
    ls = sub.add_parser("list", help="list the keys of an experiment file: top level, [evaluation], [online], "
                                     "[logging], and every scenario, strategy and model with its parameters and "
                                     "defaults")
    ls.add_argument("name", nargs="?", metavar="NAME",
                    help="show only the entries (keys, scenarios, strategies, models) whose name contains NAME "
                         "(ignoring case)")
    _data_parser(sub)
    rep = sub.add_parser("report", help="write the HTML and Markdown report of run directories or of a sweep",
                         description="Write index.html (self-contained) and report.md with figures/*.png from "
                                     "run directories; several directories give one comparison report; a sweep "
                                     "directory (of `lifelong sweep`) gives the sweep's report.")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                     help="a directory written by `lifelong run`, or one sweep directory")
    rep.add_argument("--out", help="output directory (default: the run or sweep directory itself for one, "
                                   "reports/comparison-<names> for several)")
    rep.add_argument("--compare", action="append", default=[], metavar="A,B",
                     help="tabulate only these pairs of strategies (A minus B, paired by seed; repeatable), "
                          "named as the report shows them: the label, or 'label [run directory]' where a label "
                          "is in several run directories (default: every pair)")
    return p


def _data_parser(sub) -> None:
    # Dataset names are checked in data_command: importing scenarios here would load torch
    # for every command.
    d = sub.add_parser("data", help="download or check the data files of the real-data scenarios",
                       description="Files live under the data root: --data-root, else $LIFELONG_DATA, else ./data.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="fetch a dataset's missing or damaged files from the official sources",
                         description="Fetch, check (sha256/md5) and move into place the files of a dataset. "
                                     "Exit status 1 if a file cannot be fetched (e.g. no internet).")
    dl.add_argument("name", help="dataset: mnist, fashion-mnist or omniglot")
    dl.add_argument("--data-root", metavar="DIR", help="data root (default: $LIFELONG_DATA, else ./data)")
    dl.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="limit on each connection and read (default 30)")
    ck = dsub.add_parser("check", help="say whether each file of the datasets is present and intact",
                         description="Exit status 2 if any file is missing, truncated or corrupt.")
    ck.add_argument("names", nargs="*", metavar="NAME", help="datasets to check (default: all)")
    ck.add_argument("--data-root", metavar="DIR", help="data root (default: $LIFELONG_DATA, else ./data)")


def data_command(args) -> int:
    from scenarios.data import DATASETS, DataError, check, download, resolve_data_root

    root = resolve_data_root(args.data_root)
    names = args.names if args.data_command == "check" else [args.name]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        print(f"lifelong: error: unknown dataset {unknown[0]!r}; valid: {', '.join(DATASETS)}", file=sys.stderr)
        return EXIT_USAGE
    if args.data_command == "check":
        problems = [m for name in (args.names or DATASETS) for m in check(name, root)]
        for m in problems:
            print(f"lifelong: {m}", file=sys.stderr)
        print(f"data root {root}: " + (f"{len(problems)} problem(s)" if problems else "all files present and intact"))
        return EXIT_USAGE if problems else 0
    try:
        download(args.name, root, timeout=args.timeout, log=lambda line: print(line, file=sys.stderr))
    except DataError as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: files present and verified in {root / args.name}")
    return 0


def _experiment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment file (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. strategies.finetune.lr=0.05 or scenario.num_tasks=3 (repeatable)")
    p.add_argument("--seeds", type=_seeds, help="comma-separated seeds, replacing the file's (e.g. 0,1,2)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="replace the file's device")


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
        head = f"{name}: {_type_name(f.annotation)}" + (" (required)" if f.is_required() else f" = {default!r}")
        lines.append(f"{indent}{head:<46} {f.description or ''}".rstrip())
    return lines


def list_command() -> str:
    """The text of ``lifelong list``: every key of an experiment file (the top level,
    ``[evaluation]``, ``[online]``, ``[logging]``) and, from the registries, every scenario, strategy and model
    with its parameters, types, defaults and descriptions. Imports every registered module,
    hence torch (seconds); :func:`cached_list` is the fast path of the command.

    The text is sections separated by a blank line: a heading, then entries, each a line
    indented by two spaces that starts with the entry's name and a colon, followed by its
    parameters indented by six (:func:`filter_list` relies on this shape).
    """
    import scenarios
    import strategies
    from simulator.config import LoggingParams, TopLevel
    from simulator.evaluator import EvalSettings
    from simulator.online import OnlineSettings

    out = ["Experiment file, top level (keys outside any table)"] + _describe_params(TopLevel, "  ")
    out += ["", "[evaluation] (how every task is scored)"] + _describe_params(EvalSettings, "  ")
    out += ["", "[online] (online streams only)"] + _describe_params(OnlineSettings, "  ")
    out += ["", "[logging] (what a run logs)"] + _describe_params(LoggingParams, "  ")
    out += ["", "Scenarios (experiment file: [scenario] name = ..., or 'package.module:function' of your own)"]
    for name in scenarios.available():
        fam = scenarios.family(name)
        out += [f"  {name}: {fam.description}"] + _describe_params(fam.params)
    out += ["", "Strategies (experiment file: [strategies.<label>], strategy = name, default: the label; or "
                "'package.module:Class' of your own)"]
    for name in strategies.available():
        cls = strategies.strategy_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"  {name}: {doc}"] + _describe_params(cls.Config)
    out += ["", "Models (experiment file: [model] name = ..., or [strategies.<label>.model]; or "
                "'package.module:factory' of your own)"]
    for name in strategies.MODELS.names():
        cls = strategies.MODELS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"  {name}: {doc}"] + _describe_params(cls.Params)
    return "\n".join(out)


def filter_list(text: str, name: str) -> str | None:
    """The sections of a :func:`list_command` text reduced to the entries whose name contains
    ``name``, ignoring case (a section left without entries is dropped), or ``None`` when no
    entry matches.

    Example:
        >>> text = "Models\\n  mlp: perceptron\\n      hidden: list[int]\\n  conv4: conv net"
        >>> print(filter_list(text, "MLP"))
        Models
          mlp: perceptron
              hidden: list[int]
        >>> filter_list(text, "resnet") is None
        True
    """
    wanted = name.casefold()
    sections = []
    for section in text.split("\n\n"):
        heading, *lines = section.split("\n")
        kept, keep = [], False
        for line in lines:
            if not line.startswith("   "):  # an entry's first line; its parameters are indented further
                keep = wanted in line.strip().partition(":")[0].casefold()
            if keep:
                kept.append(line)
        if kept:
            sections.append("\n".join([heading, *kept]))
    return "\n\n".join(sections) if sections else None


def list_main(name: str | None) -> int:
    """``lifelong list [NAME]``: print the list, or its entries matching ``name``; exit 2 if none does."""
    text = cached_list()
    if name is None:
        print(text)
        return 0
    found = filter_list(text, name)
    if found is None:
        print(f"lifelong: error: no experiment-file key, scenario, strategy or model has a name containing "
              f"{name!r} (ignoring case); `lifelong list` without a name shows them all", file=sys.stderr)
        return EXIT_USAGE
    print(found)
    return 0


LIST_PACKAGES = ("scenarios", "strategies")
"""The packages whose sources :func:`list_command` renders (with this module's and :data:`LIST_MODULES`)."""

LIST_MODULES = ("simulator/config.py", "simulator/evaluator.py", "simulator/online.py", "simulator/loggers.py")
"""Further sources of :func:`list_command`, relative to the project: the experiment file's own
keys, its ``[evaluation]`` and ``[online]`` tables, and the loggers that ``[logging] loggers``
may name."""


def _list_key() -> str:
    """The sha256 of everything the text of :func:`list_command` depends on: this module, every
    source file of :data:`LIST_PACKAGES` and :data:`LIST_MODULES`, and the Python and pydantic
    versions (type names and field semantics). Computed without importing any of them."""
    from importlib import metadata, util

    sources = [Path(__file__)] + [Path(__file__).parents[1] / m for m in LIST_MODULES]
    for package in LIST_PACKAGES:
        for folder in util.find_spec(package).submodule_search_locations:
            sources += sorted(Path(folder).rglob("*.py"))
    digest = hashlib.sha256(f"{sys.version}\0{metadata.version('pydantic')}\n".encode())
    for source in sources:
        digest.update(f"{source}\0".encode() + hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def _cache_dir() -> Path:
    # The rule of scenarios.data.cache_dir, repeated: importing scenarios loads torch.
    if os.environ.get("LIFELONG_CACHE"):
        return Path(os.environ["LIFELONG_CACHE"]).expanduser().absolute()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lifelong"


def cached_list() -> str:
    """The text of :func:`list_command`, from ``list.txt`` in the cache folder when that was
    rendered from the same sources (:func:`_list_key`), else rendered and stored there.

    A current cache costs a few file reads, and imports neither torch nor pydantic. A process
    that has imported the scenarios or strategies already gets the text rendered afresh: it is
    cheap then, and shows any entry the process registered itself.
    """
    if any(package in sys.modules for package in LIST_PACKAGES):
        return list_command()
    key = _list_key()
    path = _cache_dir() / "list.txt"
    try:
        stored_key, _, text = path.read_text(encoding="utf-8").partition("\n")
        if stored_key == key:
            return text
    except (OSError, ValueError):  # absent, unreadable or not text: render it
        pass
    text = list_command()
    try:
        from simulator.files import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{key}\n{text}".encode("utf-8"))
    except OSError:
        pass  # an unwritable cache folder costs the next call the rendering, nothing more
    return text


def run_command(args) -> int:
    from simulator.checkpoint import CheckpointError
    from simulator.config import ConfigError, load_experiment
    from scenarios.base import ScenarioError
    from simulator.lock import LockedError
    from simulator.rundir import RunDirError
    from simulator.experiment import run_experiment
    from simulator.runner import CheckpointPolicy, resolve_device

    try:
        experiment = load_experiment(args.experiment, args.overrides, args.seeds, args.device, args.data_root)
        resolve_device(experiment.device)
    except (ConfigError, ValueError) as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.resume and args.overwrite:
        print("lifelong: error: --resume keeps the results in --out and --overwrite removes them: give one",
              file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else Path("reports") / experiment.name
    created = not out.exists()
    policy = CheckpointPolicy(steps=args.checkpoint_every, seconds=args.checkpoint_minutes * 60)
    try:
        outcome = run_experiment(experiment, out, quiet=args.quiet, resume=args.resume, overwrite=args.overwrite,
                                 policy=policy, log_seconds=args.log_every)
    except (RunDirError, CheckpointError, LockedError, ScenarioError, ConfigError) as err:
        # ScenarioError: data files or a user stream, at build; ConfigError: the streams' checks.
        _remove_if_empty(out, created)
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        print(f"lifelong: cannot write the run directory {out}{where}: {err.strerror or err}. "
              f"Runs finished before this are saved there (continue with --resume).", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        _remove_if_empty(out, created)
        detail = f"{err}; " if str(err) else ""
        print(f"lifelong: interrupted: {detail}finished runs are saved in {out} "
              f"(continue with --resume).", file=sys.stderr)
        return 130
    if outcome.reused:
        print(f"resumed: {outcome.reused} finished run(s) kept from {out}", file=sys.stderr)
    if outcome.failures:
        for f in outcome.failures:
            print(f"lifelong: run failed: {f.error}", file=sys.stderr)
        print(f"report: {out / 'index.html'} and {out / 'report.md'} ({len(outcome.failures)} run(s) failed)")
        return 1
    print(f"report: {out / 'index.html'} and {out / 'report.md'}")
    return 0


def _remove_if_empty(out: Path, created: bool) -> None:
    """Remove the output directory this command created when nothing but its lock is in it."""
    if not created or not out.is_dir():
        return
    if all(p.name == ".lock" for p in out.iterdir()):
        (out / ".lock").unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:
            pass


def report_command(args) -> int:
    from simulator.report import ReportError, default_out_dir, write_report
    from simulator.report.compare import parse_pairs

    out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    try:
        index = write_report(args.run_dirs, out, pairs=parse_pairs(args.compare))
    except ReportError as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"lifelong: cannot write the report to {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"report: {index} and {out / 'report.md'}")
    return 0


def _writable(out: Path) -> bool:
    """Whether the output directory can be created and written; says why not."""
    from simulator.rundir import ensure_writable

    try:
        ensure_writable(out)
    except OSError as err:
        print(f"lifelong: error: cannot write to the output directory {out}: {err.strerror or err}",
              file=sys.stderr)
        return False
    return True


def sweep_command(args) -> int:
    from simulator.config import ConfigError
    from simulator.lock import LockedError
    from simulator.runner import resolve_device
    from simulator.store import StoreError
    from simulator.sweep import SweepError, load_sweep, run_sweep

    try:
        sweep = load_sweep(args.experiment, args.overrides, args.seeds, args.device, args.data_root)
        for device in {t.config["device"] for t in sweep.trials}:
            resolve_device(device)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.address and args.backend != "ray":
            raise ValueError("--address needs --backend ray")
    except (ConfigError, ValueError) as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lifelong: interrupted before any trial ran", file=sys.stderr)
        return 130
    out = Path(args.out) if args.out else Path("reports") / f"{sweep.name}-sweep"
    if not _writable(out):
        return EXIT_USAGE
    try:
        outcome = run_sweep(sweep, out, workers=args.workers, backend=args.backend, address=args.address,
                            quiet=args.quiet)
    except StoreError as err:
        if err.damaged:
            print(f"lifelong: error: {err.path} is damaged or not a results database ({err.reason}). Move it "
                  f"away and run the same command again: trials already finished are read back from "
                  f"{out / 'trials'}, not run again.", file=sys.stderr)
            return EXIT_USAGE
        print(f"lifelong: cannot update the results database {err.path}: {err.reason}. Trials finished "
              f"before this are recorded there and no trial process is left running; fix the cause (for "
              f"example free disk space) and run the same command again to continue.", file=sys.stderr)
        return 1
    except (LockedError, SweepError) as err:
        print(f"lifelong: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"lifelong: cannot write the sweep directory {out}: {err.strerror or err}. "
              f"Trials finished before this are recorded in {out / 'results.db'}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lifelong: interrupted; finished trials are recorded in {out / 'results.db'} "
              f"(run the same command again to continue).", file=sys.stderr)
        return 130
    # Counts as results.db has them: "failed" includes failures of earlier runs still standing.
    retry = [f for f in outcome.failed if f.failure != "trial"]
    print(f"trials: {len(sweep.trials)} in all, {outcome.skipped} already finished, {outcome.ran} run now, "
          f"{len(outcome.failed)} failed" + (f" ({len(retry)} to retry: run the same command again)" if retry else ""))
    for f in outcome.failed:
        kind = "failed" if f.failure == "trial" else "failed (retried by the next run)"
        print(f"lifelong: trial {f.trial_id} {kind}: {f.error}", file=sys.stderr)
    print(f"summary: {out / 'summary.md'}")
    return 1 if outcome.failed else 0


def export_command(args) -> int:
    """``lifelong export DIR``: a sweep directory's ``results.db`` (one column per grid key) or a
    run directory's ``results.json`` as CSV."""
    from simulator.store import ResultsDB, RunDirectoryError, StoreError, errors_named, export_run_csv

    directory = Path(args.directory)
    db_path = directory / "results.db"
    out = Path(args.out) if args.out else directory / "metrics.csv"
    if not db_path.is_file():
        if not (directory / "results.json").is_file():
            what = "no such directory" if not directory.exists() else "neither results.db nor results.json is there"
            print(f"lifelong: error: {directory} is not a run directory (written by `lifelong run`, holding "
                  f"results.json) or a sweep directory (written by `lifelong sweep`, holding results.db): {what}",
                  file=sys.stderr)
            return EXIT_USAGE
        try:
            count = export_run_csv(directory, out)
        except RunDirectoryError as err:
            print(f"lifelong: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:
            print(f"lifelong: cannot export {directory} to {out}: {err.strerror or err}", file=sys.stderr)
            return 1
        print(f"exported {count} metric rows to {out}")
        return 0
    try:
        db = ResultsDB(db_path, create=False)
        try:
            with errors_named(db_path):
                count = db.export_csv(out)
        finally:
            db.close()
    except StoreError as err:
        if err.damaged:
            print(f"lifelong: error: {err.path} is damaged or not a results database ({err.reason})", file=sys.stderr)
            return EXIT_USAGE
        print(f"lifelong: cannot read the results database {err.path}: {err.reason}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"lifelong: cannot write {out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"exported {count} metric rows to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "sweep":
        return sweep_command(args)
    if args.command == "export":
        return export_command(args)
    if args.command == "list":
        return list_main(args.name)
    if args.command == "report":
        return report_command(args)
    if args.command == "data":
        return data_command(args)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
