"""User-defined streams: from tensors or torch datasets in Python, or from a function named in
an experiment file.

In Python::

    import torch
    from scenarios import from_tensors

    def task(c):  # two Gaussian blobs per task, classes 2c and 2c+1
        x = torch.randn(200, 2) + 4 * c
        y = torch.arange(2 * c, 2 * c + 2).repeat(100)
        return x, y, x + 0.1 * torch.randn(200, 2), y
    stream = from_tensors([task(0), task(1)], protocol="class-incremental")

In an experiment file, ``[scenario] name = "package.module:function"`` names a function that
returns a :class:`~scenarios.base.Stream`; the table's other keys are passed to it as keyword
arguments, and the run's seed as ``seed``. The function's signature is its parameter schema:
keys it does not take, missing required keys and values that contradict its type annotations
are reported with their field path before anything runs. A function that accepts
``data_root`` receives the resolved data root like the built-in families.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import sys
from typing import Any, Callable, Sequence

import torch
from pydantic import ConfigDict, TypeAdapter, create_model
from torch import Tensor

from scenarios.base import PROTOCOLS, Family, LabelledPool, ScenarioError, Stream, StreamSpec, Task
from scenarios.params import Params


def _as_tensor(value: Any, what: str) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ScenarioError(f"{what} cannot be read as a tensor: {err}") from None


def _check_task(i: int, x_train, y_train, x_test, y_test) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    out = []
    for part, (x, y) in (("train", (x_train, y_train)), ("test", (x_test, y_test))):
        x, y = _as_tensor(x, f"task {i} x_{part}"), _as_tensor(y, f"task {i} y_{part}")
        if not torch.is_floating_point(x):
            raise ScenarioError(f"task {i} x_{part} has dtype {x.dtype}; inputs must be floating point "
                                f"(for 8-bit images, x.float() / 255)")
        if y.dim() != 1 or torch.is_floating_point(y) or y.dtype == torch.bool:
            raise ScenarioError(f"task {i} y_{part} must be a 1-D tensor of integer class labels; got "
                                f"shape {tuple(y.shape)}, dtype {y.dtype}")
        if x.dim() < 2 or x.shape[0] != y.shape[0]:
            raise ScenarioError(f"task {i}: x_{part} has shape {tuple(x.shape)} but y_{part} has {y.shape[0]} labels; "
                                f"x needs one row per label")
        if len(y) == 0:
            raise ScenarioError(f"task {i} has no {part} examples")
        if int(y.min()) < 0:
            raise ScenarioError(f"task {i} y_{part} holds a negative label ({int(y.min())})")
        out += [x, y.long()]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise ScenarioError(f"task {i}: train inputs have shape {tuple(out[0].shape[1:])} but test inputs "
                            f"{tuple(out[2].shape[1:])}")
    return tuple(out)


def from_tensors(tasks: Sequence[Sequence[Any]], *, protocol: str = "class-incremental", name: str = "custom",
                 shots: int = 5, query: int = 10, ways: int | None = None, output_size: int | None = None,
                 task_names: Sequence[str] | None = None) -> Stream:
    """A classification stream from tensors, one ``(x_train, y_train, x_test, y_test)`` per task.

    Args:
        tasks: per task, float inputs ``x`` (N, *input_shape) and integer labels ``y`` (N,)
            for training and for the held-out test pool (tensors or arrays).
        protocol: ``class-incremental`` (global labels, one head), ``task-incremental``
            (outputs masked to each task's labels), ``domain-incremental`` (the same labels in
            every task) or ``few-shot`` (``ways``-way episodes, labels 0..ways-1 per episode).
        name: the stream's name in results.
        shots, query: default support and query examples per class of an episode.
        ways: classes per episode; required for, and only for, ``few-shot``.
        output_size: size of the model's output (default: the largest label + 1, or ``ways``).
        task_names: readable task names (default ``"task 0"``, ...).

    Returns:
        A :class:`Stream` whose task t has id t and holds exactly the given examples.

    Raises:
        ScenarioError: inconsistent shapes, non-float inputs, non-integer or negative labels,
            labels beyond ``output_size``, or too few classes for ``ways``.

    Example:
        >>> import torch
        >>> x, y = torch.randn(20, 3), torch.arange(2).repeat(10)
        >>> stream = from_tensors([(x, y, x, y), (x, y + 2, x, y + 2)])
        >>> [t.classes for t in stream], stream.spec.output_size
        ([(0, 1), (2, 3)], 4)
    """
    if protocol not in PROTOCOLS:
        raise ScenarioError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if (protocol == "few-shot") != (ways is not None):
        raise ScenarioError("ways (classes per episode) is required for protocol 'few-shot' and only for it")
    tasks = list(tasks)
    if not tasks:
        raise ScenarioError("a stream needs at least one task")
    if task_names is not None and len(task_names) != len(tasks):
        raise ScenarioError(f"{len(task_names)} task names for {len(tasks)} tasks")
    checked = []
    for i, t in enumerate(tasks):
        if len(t) != 4:
            raise ScenarioError(f"task {i} must be (x_train, y_train, x_test, y_test); got {len(t)} items")
        checked.append(_check_task(i, *t))
    input_shape = tuple(checked[0][0].shape[1:])
    for i, (xtr, *_rest) in enumerate(checked):
        if tuple(xtr.shape[1:]) != input_shape:
            raise ScenarioError(f"task {i} inputs have shape {tuple(xtr.shape[1:])}; task 0's have {input_shape}")
    top = max(int(torch.cat([c[1], c[3]]).max()) for c in checked) + 1
    size = output_size if output_size is not None else (ways if protocol == "few-shot" else top)
    if protocol != "few-shot" and top > size:
        raise ScenarioError(f"labels go up to {top - 1} but output_size is {size}")
    built = []
    for i, (xtr, ytr, xte, yte) in enumerate(checked):
        classes = tuple(torch.cat([ytr, yte]).unique().tolist())
        if protocol == "few-shot" and min(len(ytr.unique()), len(yte.unique())) < ways:
            raise ScenarioError(f"task {i} has fewer than ways = {ways} classes in its train or test examples")
        built.append(Task(id=i, name=task_names[i] if task_names else f"task {i}", classes=classes,
                          train=LabelledPool(xtr, ytr), test=LabelledPool(xte, yte), protocol=protocol,
                          output_size=size, ways=ways))
    spec = StreamSpec(name=name, kind="classification", protocol=protocol, input_shape=input_shape,
                      output_size=size, num_tasks=len(built), shots=shots, query=query, ways=ways)
    return Stream(spec, tuple(built))


def dataset_tensors(dataset, what: str = "dataset", batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Every ``(x, y, ...)`` item of a map-style torch dataset, stacked as ``(x, y)`` tensors."""
    from torch.utils.data import DataLoader

    xs, ys = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise ScenarioError(f"{what} must yield (input, label) pairs")
            xs.append(_as_tensor(batch[0], f"{what} inputs"))
            ys.append(_as_tensor(batch[1], f"{what} labels"))
    except (TypeError, RuntimeError) as err:
        raise ScenarioError(f"{what} cannot be batched into tensors ({err}); its items must be "
                            f"(tensor, label) pairs, e.g. with transforms.ToTensor()") from None
    if not xs:
        raise ScenarioError(f"{what} is empty")
    return torch.cat(xs), torch.cat(ys)


def from_datasets(tasks: Sequence[tuple[Any, Any]], **options) -> Stream:
    """A classification stream from torch datasets, one ``(train_dataset, test_dataset)`` per
    task; each item must be ``(input tensor, integer label)``. The datasets are read once, in
    order, into tensors; the options are those of :func:`from_tensors`.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> d = TensorDataset(torch.randn(10, 3), torch.arange(2).repeat(5))
        >>> len(from_datasets([(d, d)]))
        1
    """
    tensors = []
    for i, pair in enumerate(tasks):
        if len(pair) != 2:
            raise ScenarioError(f"task {i} must be (train_dataset, test_dataset); got {len(pair)} items")
        train, test = pair
        tensors.append((*dataset_tensors(train, f"task {i} train dataset"),
                        *dataset_tensors(test, f"task {i} test dataset")))
    return from_tensors(tensors, **options)


# -- a function named in an experiment file ------------------------------------------------------

def _one_paragraph(text: str) -> str:
    """``text`` on one line: its non-blank lines joined with spaces (a user's exception
    message may span lines; an error is reported as one paragraph).

    Example:
        >>> _one_paragraph("no file\\n  at /x\\n")
        'no file at /x'
    """
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def import_named(target: str, what: str, error: type[Exception], form: str = "package.module:name") -> Any:
    """The object that ``target = "package.module:name"`` names (``name`` may be dotted:
    ``Outer.Inner``), importing the module; every problem raises ``error`` with one paragraph
    naming ``what`` (``"scenario"``, ``"strategy"``, ``"model"``) and the target.

    The current directory is searched after the installed packages while the module is
    imported (the ``lifelong`` script does not put it on ``sys.path``, and a user's module
    usually lies there, as uvicorn and gunicorn do); ``sys.path`` is as it was afterwards.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise error(f"{target!r} is not of the form {form!r}")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise error(f"cannot import module {module_name!r} for {what} {target!r} ({err}); it must be "
                    f"installed or lie in the current directory ({os.getcwd()})") from None
    except Exception as err:  # the user's module itself fails: report it, not a traceback
        raise error(f"importing module {module_name!r} for {what} {target!r} failed: "
                    f"{type(err).__name__}: {_one_paragraph(str(err))}") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):  # the user's module may have removed it itself
                sys.path.remove(cwd)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"module {module_name!r} has no attribute {attr!r} ({what} {target!r})")
        obj = getattr(obj, part)
    return obj


def _import_target(target: str) -> Callable:
    fn = import_named(target, "scenario", ScenarioError, form="package.module:function")
    if not callable(fn):
        raise ScenarioError(f"{target!r} is a {type(fn).__name__}, not a function returning a Stream")
    return fn


class _ClosedParams(Params):
    """Parameters of a user function: its named parameters only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)


class _OpenParams(Params):
    """Parameters of a user function taking ``**kwargs``: any further key is passed on."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, arbitrary_types_allowed=True)


def _field_type(annotation: Any) -> Any:
    """The annotation if pydantic can validate it, else ``Any`` (no check)."""
    if annotation is inspect.Parameter.empty:
        return Any
    try:
        TypeAdapter(annotation)
    except Exception:  # pydantic raises several error types for unsupported annotations
        return Any
    return annotation


def _params_model(target: str, fn: Callable) -> type[Params]:
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, ValueError):
        signature = inspect.signature(fn)
    params = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if "seed" not in params and not takes_kwargs:
        raise ScenarioError(f"{target} must accept a keyword argument 'seed' (the run's seed)")
    fields = {}
    for name, p in params.items():
        if name == "seed" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise ScenarioError(f"{target}: parameter {name!r} is positional-only; experiment keys are passed by name")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (_field_type(p.annotation), default)
    return create_model(f"Params[{target}]", __base__=_OpenParams if takes_kwargs else _ClosedParams, **fields)


@functools.cache  # one family per target and process (callable_family.cache_clear() forgets them)
def callable_family(target: str) -> Family:
    """A :class:`Family` for the function named ``"package.module:function"``.

    The function's parameters (except ``seed``) become the family's parameters, typed by their
    annotations; :meth:`Family.build` calls ``function(**params, seed=seed)`` and checks that it
    returns a :class:`Stream`.

    Raises:
        ScenarioError: the module cannot be imported, the function does not exist, is not
            callable or takes no ``seed``; later, from ``build``, when the function raises
            (its exception's type and message, in one paragraph) or returns something other
            than a Stream.
    """
    fn = _import_target(target)
    model = _params_model(target, fn)

    def build(params: Params, seed: int) -> Stream:
        try:
            stream = fn(**params.model_dump(), seed=seed)
        except Exception as err:  # the user's code fails: report its error, not a traceback
            raise ScenarioError(f"scenario {target} failed with seed {seed}: {type(err).__name__}: "
                                f"{_one_paragraph(str(err))}") from None
        if not isinstance(stream, Stream):
            raise ScenarioError(
                f"scenario {target} returned a {type(stream).__module__}.{type(stream).__qualname__}; it must "
                f"return a scenarios.Stream (build one with scenarios.from_tensors or scenarios.from_datasets)")
        return stream

    doc = (inspect.getdoc(fn) or f"user stream {target}").splitlines()[0]
    return Family(target, model, build, doc)
