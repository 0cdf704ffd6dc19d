"""Small checks for the options dataclasses, so every command validates its options once, the same way.

Each check returns a problem (a sentence naming the CLI option, the value given and what it takes) or
None. An options dataclass collects the problems of all its fields in ``__post_init__`` and hands them to
:func:`raise_problems`, which raises one :class:`~clumptool.common.errors.ClumptoolError` listing every
problem, so a user sees everything wrong with a command line at once (as scikit-learn checks parameters
once, when fitting starts). Code that receives a validated options object trusts it and checks nothing again.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

from clumptool.common.errors import ClumptoolError

T = TypeVar("T")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _hint(note: str) -> str:
    return f" ({note})" if note else ""


def positive(option: str, value: object, note: str = "") -> str | None:
    """``value`` must be a finite number > 0."""
    if _is_number(value) and float(value) > 0:
        return None
    return f"{option} {value}: must be a positive number{_hint(note)}"


def in_range(option: str, value: object, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             note: str = "") -> str | None:
    """``value`` must be a finite number in [lo, hi] (open at either end as asked)."""
    if _is_number(value):
        v = float(value)
        if (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi):
            return None
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return f"{option} {value}: must be in {interval}{_hint(note)}"


def at_least(option: str, value: object, minimum: float, note: str = "") -> str | None:
    """``value`` must be a finite number >= ``minimum``."""
    if _is_number(value) and float(value) >= minimum:
        return None
    return f"{option} {value}: must be a number >= {minimum:g}{_hint(note)}"


def whole_number(option: str, value: object, minimum: int = 0, maximum: int | None = None,
                 note: str = "") -> str | None:
    """``value`` must be a whole number >= ``minimum`` (and <= ``maximum`` when given)."""
    if _is_whole(value) and value >= minimum and (maximum is None or value <= maximum):
        return None
    allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    return f"{option} {value}: must be a whole number {allowed}{_hint(note)}"


def one_of(option: str, value: object, choices: Collection[object], note: str = "") -> str | None:
    """``value`` must be one of ``choices``."""
    if value in choices:
        return None
    return f"{option} {value!r}: use one of {', '.join(map(str, choices))}{_hint(note)}"


def optional(check, option: str, value: object, *args, **kwargs) -> str | None:
    """``check`` applied only when ``value`` is not None (None = the documented default)."""
    return None if value is None else check(option, value, *args, **kwargs)


def raise_problems(problems: Iterable[str | None]) -> None:
    """Raise one ClumptoolError listing every problem (None entries are fine), or return."""
    found = [p for p in problems if p]
    if found:
        raise ClumptoolError("; ".join(found))


def options_from(cls: type[T], options: T | None, fields: dict[str, Any]) -> T:
    """The options a library function runs with: ``options`` (or the defaults of ``cls``) with ``fields``
    (keyword arguments named as the dataclass's fields) replacing theirs; checked once, by ``cls``."""
    if options is None:
        return cls(**fields)
    return dataclasses.replace(options, **fields) if fields else options
