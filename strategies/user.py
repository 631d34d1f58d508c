"""A user's own strategy class or model factory, named in an experiment file by ``"package.module:name"``.

::

    [model]
    name = "my_methods:small_net"        # a callable small_net(spec, **options) -> nn.Module
    width = 32                           # an option: a keyword argument of small_net

    [strategies.mine]
    strategy = "my_methods:MyFinetune"   # a subclass of strategies.Strategy
    lr = 0.05                            # a field of MyFinetune.Config

Naming them imports the module (installed, or in the current directory) and so runs its code.
Everything is checked when the experiment file is validated, before anything runs, and every
problem is a :class:`UserCodeError`, one paragraph for the user:

- a strategy must be a subclass of :class:`strategies.base.Strategy` whose ``Config`` is a
  subclass of :class:`strategies.base.StrategyConfig` (its fields are the table's keys: an
  unknown key is refused as for a built-in strategy), and every protocol method it defines
  must accept the runner's call (``learn(task)``, ``adapt(support, steps)``, ...);
- a model factory must be callable with a keyword ``spec`` (the
  :class:`~scenarios.base.StreamSpec` it is sized for, as a built-in backbone's
  ``from_params`` gets it); its other parameters are the model's options, typed by their
  annotations, required where they have no default. What it returns must be an
  ``nn.Module``, checked when it is first built (by the run's checks, before anything runs).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from pydantic import create_model
from torch import nn

from scenarios.base import StreamSpec
from scenarios.params import Params
from scenarios.custom import _ClosedParams, _field_type, _OpenParams, _one_paragraph, import_named
from strategies.base import Strategy, StrategyConfig


class UserCodeError(ValueError):
    """A ``package.module:name`` target that cannot serve as a strategy or a model: ``str(err)``
    is one paragraph saying what is wrong."""


def is_target(name: Any) -> bool:
    """Whether ``name`` names user code (``"package.module:name"``) rather than a registered entry.

    Example:
        >>> is_target("my_methods:MyFinetune"), is_target("maml")
        (True, False)
    """
    return isinstance(name, str) and ":" in name


def import_target(target: str, what: str) -> Any:
    """The object ``target = "package.module:name"`` names (``name`` may be dotted: ``Outer.Inner``),
    or :class:`UserCodeError`; ``what`` names the use in messages (``"strategy"``, ``"model"``).
    See :func:`scenarios.custom.import_named`, which scenario functions use too."""
    return import_named(target, what, UserCodeError)


# -- strategies -----------------------------------------------------------------------------------

# How the runner and the evaluator call each protocol method (after ``self``): a method the
# user's class defines must accept these arguments, so a wrong signature is found before a run.
PROTOCOL_CALLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "__init__": (("config",), ("label",)),
    "setup": (("model", "spec", "device"), ("seed",)),
    "learn": (("task",), ()),
    "adapt": (("support", "steps"), ()),
    "predict": (("state", "x"), ()),
    "state_dict": ((), ()),
    "load_state_dict": (("state",), ()),
    "model_spec": (("spec",), ()),
    "observe": (("x", "y", "task"), ()),
    "predict_online": (("x",), ()),
}


def _signature_problem(cls: type, method: str) -> str | None:
    """Why ``cls.method`` cannot take the runner's call, or ``None``."""
    function = inspect.getattr_static(cls, method)
    if isinstance(function, (staticmethod, classmethod)) or not callable(function):
        return f"{method} must be a plain method"
    positional, keywords = PROTOCOL_CALLS[method]
    try:
        inspect.signature(function).bind(None, *positional, **{k: None for k in keywords})
    except TypeError as err:
        call = ", ".join([*positional, *(f"{k}=..." for k in keywords)])
        return f"{method} cannot be called as {method}({call}) ({err})"
    except ValueError:  # no signature to read (a builtin): nothing to check
        return None
    return None


@functools.cache  # one class per target and process (user_strategy.cache_clear() forgets them)
def user_strategy(target: str) -> type[Strategy]:
    """The strategy class ``target = "package.module:Class"`` names, checked against the protocol.

    Raises:
        UserCodeError: the module cannot be imported, has no such attribute, the attribute is
            not a subclass of :class:`~strategies.base.Strategy`, its ``Config`` is not a
            :class:`~strategies.base.StrategyConfig`, or a protocol method it defines does
            not accept the runner's call.
    """
    cls = import_target(target, "strategy")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        kind = "a class that does not derive from it" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise UserCodeError(f"strategy {target!r} must be a subclass of strategies.Strategy (the protocol: "
                            f"setup, learn, adapt, predict, state_dict, load_state_dict); it is {kind}")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, StrategyConfig)):
        raise UserCodeError(f"strategy {target!r}: its Config must be a subclass of strategies.StrategyConfig "
                            f"(a pydantic model whose fields are the experiment file's keys), got {cls.Config!r}")
    if cls.learn is Strategy.learn and not cls.learns_online():
        raise UserCodeError(f"strategy {target!r} defines neither learn(task) nor observe(x, y, task): it "
                            f"would learn nothing")
    for method in PROTOCOL_CALLS:
        if getattr(cls, method) is not getattr(Strategy, method):  # the base's own methods fit
            problem = _signature_problem(cls, method)
            if problem:
                raise UserCodeError(f"strategy {target!r}: {problem}")
    return cls


# -- models ---------------------------------------------------------------------------------------

class UserModel:
    """A model factory adapted to the interface of the registered backbones: ``Params`` (the
    factory's options as a parameter model) and ``from_params(params, spec)``."""

    def __init__(self, target: str, factory: Callable[..., nn.Module], params: type[Params], doc: str):
        self.target, self.factory, self.Params, self.__doc__ = target, factory, params, doc

    def from_params(self, params: Params, spec: StreamSpec) -> nn.Module:
        """``factory(spec=spec, **options)``; a ``ValueError`` saying so if it raises or
        returns something other than an ``nn.Module``."""
        try:
            model = self.factory(spec=spec, **params.model_dump())
        except Exception as err:  # the user's code fails: its error in one paragraph, not a traceback
            raise ValueError(f"model factory {self.target} failed: {type(err).__name__}: "
                             f"{_one_paragraph(str(err))}") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"model factory {self.target} returned a {type(model).__module__}."
                             f"{type(model).__qualname__}; it must return a torch.nn.Module")
        return model

    def input_problem(self, params: Params, input_shape: tuple[int, ...]) -> str | None:
        """A user's factory says nothing in advance: its problems show when it is built."""
        return None


def _options_model(target: str, factory: Callable) -> type[Params]:
    """The factory's parameters other than ``spec``, as a parameter model."""
    try:
        signature = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError):  # an annotation that cannot be evaluated: read them unevaluated
        signature = inspect.signature(factory)
    params = signature.parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    spec = params.get("spec")
    if (spec is None or spec.kind is spec.POSITIONAL_ONLY) and not takes_kwargs:
        raise UserCodeError(f"model {target!r} must accept a keyword argument 'spec' (the stream spec it is "
                            f"sized for: spec.input_shape, spec.output_size)")
    fields = {}
    for name, p in params.items():
        if name == "spec" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise UserCodeError(f"model {target!r}: parameter {name!r} is positional-only; model options are "
                                f"passed by name")
        fields[name] = (_field_type(p.annotation), ... if p.default is inspect.Parameter.empty else p.default)
    return create_model(f"Params[{target}]", __base__=_OpenParams if takes_kwargs else _ClosedParams, **fields)


@functools.cache  # one factory per target and process (user_model.cache_clear() forgets them)
def user_model(target: str) -> UserModel:
    """The model factory ``target = "package.module:factory"`` names (a function or an
    ``nn.Module`` class), with its options' parameter model.

    Raises:
        UserCodeError: the module cannot be imported, has no such attribute, the attribute is
            not callable, takes no keyword ``spec``, or has a positional-only option.
    """
    factory = import_target(target, "model")
    if not callable(factory):
        raise UserCodeError(f"model {target!r} is a {type(factory).__name__}, not a function or class "
                            f"returning a torch.nn.Module")
    try:
        inspect.signature(factory)
    except (TypeError, ValueError):
        raise UserCodeError(f"model {target!r}: its signature cannot be read, so its options are unknown") from None
    doc = (inspect.getdoc(factory) or f"user model {target}").splitlines()[0]
    return UserModel(target, factory, _options_model(target, factory), doc)
