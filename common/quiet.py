"""Quiet library chatter: Lightning's info lines and library warnings, never errors.

``--quiet`` and the demo's own progress lines would otherwise drown in Lightning's tips and deprecation
warnings. Logging levels and the warning filters are restored on exit.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Inside the block, library loggers print only errors and warnings are not shown."""
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def quiet_if(quiet: bool) -> contextlib.AbstractContextManager:
    """:func:`quiet_libraries` when ``quiet``, else nothing."""
    return quiet_libraries() if quiet else contextlib.nullcontext()
