"""Harness of the robustness suite: run a command as a user would, and check what it left behind.

Import it as ``from harness import ...``: a module, not a conftest, so its name never clashes with the
other test folders' conftest modules.

Every case asserts the exit code, that the message names the file/row/field or option and how to fix it, and
that previous outputs are byte-identical after a failed or interrupted run (:func:`snapshot`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from clumptool.cli import main


@dataclass(frozen=True)
class Outcome:
    """Exit code and the two streams of one command."""

    code: int
    out: str
    err: str
    hit: bool = True  # interrupt_when: the signal arrived while ``ready()`` still held

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*args: object) -> Outcome:
    """Run ``clumptool ARGS`` in-process (fast) and return its exit code and output."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    code = result.exit_code
    err = result.stderr if result.stderr_bytes is not None else ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        err += "".join(traceback.format_exception(result.exception))
        code = 99  # an uncaught exception: a traceback reached the user
    return Outcome(code, result.stdout, err)


def cli_command(*args: object) -> list[str]:
    """The argv that runs ``clumptool ARGS`` in a subprocess (for interrupts and real exits)."""
    return [sys.executable, "-m", "clumptool.cli", *[str(a) for a in args]]


def run_subprocess(*args: object, timeout: float = 300, env: dict | None = None) -> Outcome:
    """Run ``clumptool ARGS`` in a child process."""
    p = subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return Outcome(p.returncode, p.stdout, p.stderr)


def interrupt_when(args: list[object], ready, sig: int = signal.SIGINT, timeout: float = 300,
                   poll: float = 0.02, env: dict | None = None) -> Outcome:
    """Start ``clumptool ARGS``, send ``sig`` as soon as ``ready()`` is true, and return how it ended.

    ``ready`` is polled (e.g. a file that appears at the chosen point). If the command ends before
    ``ready()`` the test fails: the interrupt was not delivered where intended. The command is frozen
    (SIGSTOP) while ``ready()`` is checked again, so a loaded machine cannot let it run past a short-lived
    point (a staging folder that exists only while outputs are written) between the check and the signal;
    if it did, no signal is sent and the outcome says ``hit=False`` (the caller may retry).
    """
    p = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    start = time.monotonic()
    hit = False
    try:
        while not ready():
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"command ended (exit {p.returncode}) before the interrupt point:\n{out}\n{err}")
            if time.monotonic() - start > timeout:
                p.kill()
                pytest.fail("interrupt point never reached")
            time.sleep(poll)
        p.send_signal(signal.SIGSTOP)
        hit = ready()
        if hit:
            p.send_signal(sig)  # delivered when the command runs again
        p.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return Outcome(p.returncode, out, err, hit)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (empty when it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_traceback(outcome: Outcome) -> None:
    """A user never sees a Python traceback."""
    assert "Traceback (most recent call last)" not in outcome.text, outcome.text
