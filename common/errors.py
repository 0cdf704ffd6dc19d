"""One exception type for user-facing failures.

Library code raises :class:`ClumptoolError` with a message a person can act on (which file, which row,
which field). The CLI turns it into ``Error: <message>`` and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class ClumptoolError(Exception):
    """A failure caused by input or environment, explained in the message."""


def where(path: object, row: object = None, field: str | None = None) -> str:
    """Format a location for error messages: ``file.csv, classification_id 123, field 'annotations'``."""
    parts = [str(path)]
    if row is not None:
        parts.append(str(row))
    if field is not None:
        parts.append(f"field '{field}'")
    return ", ".join(parts)
