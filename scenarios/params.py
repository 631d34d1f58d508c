"""The base of every parameter model (stream families, strategies, models, experiment files).

Example:
    >>> class Options(Params):
    ...     width: int = 3
    >>> Options(width=4).width
    4
    >>> from pydantic import ValidationError
    >>> try:
    ...     Options(width="4")  # strict: a string is never read as a number
    ... except ValidationError as err:
    ...     print(err.errors()[0]["type"])
    int_type
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base of every parameter model (scenarios, strategies, models): unknown keys are errors,
    types are checked strictly (a string is never silently read as a number), every float is
    finite (``inf`` and ``nan`` are refused: no setting means them), values frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
