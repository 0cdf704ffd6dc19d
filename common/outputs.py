"""A command's outputs as one unit: built in a staging folder, published together with a manifest, or not at all.

A scientist trusts a folder of outputs only if every file in it comes from the same run. So each command
writes into a hidden sibling staging folder (``.NAME.partial``), writes ``manifest.json`` last (the run, its
options and every file with its size and SHA-256), and only then swaps the staging folder in place of the
output folder. A failure or Ctrl-C before that leaves the previous outputs exactly as they were; a rerun with
other options never leaves stale files of the earlier run beside new ones.

The swap is two renames in one parent folder (old folder aside, staging folder in), so a reader sees either
the old set or the new one; a crash between the two renames is repaired by the next run (the set put aside is
restored before anything else happens).

An existing output folder is replaced only if it holds a clumptool manifest (a set written by this module) or
is empty: a folder of the user's own files is never deleted.

Two runs writing the same output folder at once would share one staging folder and publish a mix of both, so
a run holds an exclusive lock (``.NAME.lock`` beside the folder, released by the operating system if the run
dies) from staging to publishing, and a second run is refused with a message instead of waiting.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from clumptool import __version__
from clumptool.common.errors import ClumptoolError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "clumptool-output-set/1"


def staging_path(out_dir: str | os.PathLike) -> Path:
    """The deterministic staging folder of ``out_dir`` (a hidden sibling), e.g. for resumable runs."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.partial"


def _lock_path(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold the output folder's lock for the block; refuse at once when another run holds it."""
    path = _lock_path(out_dir)
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ClumptoolError(
            f"--out {out_dir}: another clumptool run is writing this folder now; wait for it to finish "
            "or choose another --out"
        ) from None
    try:
        yield
    finally:
        # Removed while still held: a run that opened the old file sees it unlinked and takes a fresh one.
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def _aside_path(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.previous"


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a published output set, or None when the folder holds none."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None


def recover_interrupted_swap(out_dir: str | os.PathLike) -> None:
    """Put back an output set that a crash left aside between the two renames of a publish."""
    out = Path(out_dir)
    aside = _aside_path(out)
    if aside.exists():
        if out.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, out)


def check_output_location(out_dir: str | os.PathLike, what: str = "--out") -> Path:
    """Fail early (before any work) when ``out_dir`` cannot receive an output set.

    It must be a folder (or not exist yet) whose parent can be created and written, and if it exists it must
    be empty or hold a clumptool output set: the user's own files are never replaced.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ClumptoolError(f"{what} {out}: exists and is not a folder; give a folder path for the outputs")
    recover_interrupted_swap(out)
    if out.is_dir() and any(out.iterdir()) and read_manifest(out) is None:
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ClumptoolError(
            f"{what} {out}: folder exists and holds files clumptool did not write ({shown}); "
            "choose a new or empty folder (clumptool replaces only its own output sets)"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClumptoolError(f"{what} {out}: cannot create the parent folder ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ClumptoolError(f"{what} {out}: the folder {parent} is not writable; choose another location")
    return out


@dataclass
class OutputSet:
    """The staging folder of one run: write every output into :attr:`path`."""

    out_dir: Path
    path: Path
    command: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    info: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        """Path of an output file inside the staging folder (sub-folders are created)."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def _write_manifest(staged: OutputSet) -> None:
    files = {}
    for p in sorted(staged.path.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            rel = p.relative_to(staged.path).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": file_digest(p)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "command": staged.command,
        "run_id": staged.run_id,
        "clumptool_version": __version__,
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "info": staged.info,
        "files": files,
    }
    tmp = staged.path / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, staged.path / MANIFEST_NAME)


def publish(staged: OutputSet) -> Path:
    """Write the manifest last, then swap the staging folder in place of the output folder."""
    _write_manifest(staged)
    out, aside = staged.out_dir, _aside_path(staged.out_dir)
    if aside.exists():
        shutil.rmtree(aside)
    if out.exists():
        os.replace(out, aside)
    os.replace(staged.path, out)
    shutil.rmtree(aside, ignore_errors=True)
    return out


@contextlib.contextmanager
def output_set(out_dir: str | os.PathLike, command: str, *, keep_staging_on_error: bool = False,
               reuse_staging: bool = False) -> Iterator[OutputSet]:
    """Stage a command's outputs and publish them together when the block ends without an exception.

    ``keep_staging_on_error`` leaves the staging folder for a resumable run (e.g. training checkpoints),
    ``reuse_staging`` starts from it instead of clearing it. Otherwise a failed run's staging folder is
    removed, and the previous output set is untouched either way.
    """
    out = check_output_location(out_dir)
    with _exclusive(out):
        stage = staging_path(out)
        if stage.exists() and not reuse_staging:
            shutil.rmtree(stage)
        stage.mkdir(parents=True, exist_ok=True)
        staged = OutputSet(out_dir=out, path=stage, command=command)
        try:
            yield staged
        except BaseException:
            if not keep_staging_on_error:
                shutil.rmtree(stage, ignore_errors=True)
            raise
        publish(staged)


def verify_output_set(out_dir: str | os.PathLike) -> list[str]:
    """Problems of a published output set (missing or altered files); empty when it is whole."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if manifest is None:
        return [f"{out}: no {MANIFEST_NAME}"]
    problems = []
    for rel, meta in manifest.get("files", {}).items():
        p = out / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != meta.get("bytes") or file_digest(p) != meta.get("sha256"):
            problems.append(f"{p}: changed since the run that wrote it")
    return problems
