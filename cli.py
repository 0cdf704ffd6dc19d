"""The ``clumptool`` command line.

This module only parses options and calls library functions; every command is also a plain Python
function in its layer (``clumptool.aggregation``, ``clumptool.detection``, ...). Errors a user can fix
arrive as :class:`~clumptool.common.errors.ClumptoolError` and leave as ``Error: ...`` with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path  # noqa: F401  (used by command sections)

import click

from clumptool import __version__
from clumptool.common.errors import ClumptoolError


class _Group(click.Group):
    """A click group that turns :class:`ClumptoolError` into a clean message and exit code 2."""

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except ClumptoolError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # keep the pipeline order, not alphabetical


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clumptool")
def main() -> None:
    """clumptool: Galaxy Zoo: Clump Scout volunteer clicks -> consensus clumps -> a Zoobot Faster R-CNN
    clump detector -> the next batch of galaxies back on Zooniverse.

    Pipeline: simulate (or a real export) -> aggregate -> train -> evaluate / predict -> select-next-batch.
    `clumptool demo` runs all of it on a built-in simulated project.
    """


def _csv_ints(value: str | None) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip() != "")
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


# ---------------------------------------------------------------------------------------------
# simulation commands (clumptool.simulation)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# aggregation commands (clumptool.aggregation)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# detection commands (clumptool.detection)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# active-learning commands (clumptool.active_learning)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
