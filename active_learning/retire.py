"""``clumptool retire``: retire on Zooniverse the galaxies whose consensus aggregate calls finished.

The subjects table of ``clumptool aggregate`` says per galaxy whether its consensus is finished
(``is_finished``, and why in ``finished_reason``: :mod:`clumptool.aggregation.stopping`). Retiring those
subjects (``Workflow.retire_subjects(ids, reason='consensus')``) stops Zooniverse from showing them to more
volunteers. Only rows whose ``is_finished`` is true are ever sent; a blank or false value never is.

The same ledger discipline as uploads (:mod:`clumptool.active_learning.ledger`): one SQLite row per
(workflow, subject), written before each request and after its answer, so

* a rerun retires nothing twice: subjects recorded as retired are never sent again;
* a run stopped half way (network, a 5xx, Ctrl-C) resumes with the batches that were not confirmed (Panoptes
  treats retiring a retired subject as a no-op, so a batch whose answer was lost is safely sent again);
* ``--max`` refuses to retire more galaxies in one run than the user expects (a wrong stopping threshold
  could finish most of a project), unless ``--partial`` says to retire the first ``--max`` now.

Panoptes' retirement worker silently ignores subjects that are not in the workflow, so each batch is first
checked against the server (``Subject.where(id=...)`` and the workflow's subject sets); subjects it does not
know are reported, recorded as ``unknown`` and checked again on the next run.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from clumptool.active_learning.ledger import DEFAULT_LEDGER_NAME, Ledger, _now
from clumptool.active_learning.panoptes_session import (
    DEFAULT_ENDPOINT,
    Session,
    check_endpoint,
    panoptes_session,
)
from clumptool.active_learning.state import project_key, state_root
from clumptool.common.errors import ClumptoolError, where
from clumptool.common.ids import subject_ids_int64
from clumptool.common.tables import read_table

REASON = "consensus"
DEFAULT_MAX = 1000
DEFAULT_BATCH = 50
RETIRE_STATES = ("pending", "sending", "retired", "unknown")
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0", "", "nan", "none"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retirements (
    workflow_id      TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    finished_reason  TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, subject_id)
);
"""


class RetirementLedger(Ledger):
    """The upload ledger's SQLite file and write discipline, with a ``retirements`` table."""

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ClumptoolError(f"{self.path}: not a clumptool ledger ({exc})") from exc

    def retirement_states(self, workflow_id: int) -> dict[str, str]:
        """subject id -> state, for every subject recorded for ``workflow_id``."""
        cur = self._exec("SELECT subject_id, state FROM retirements WHERE workflow_id=?", (str(workflow_id),))
        return dict(cur.fetchall())

    def _write_many(self, sql: str, rows: list[tuple]) -> None:
        """``sql`` for every row in one transaction: all of it is recorded, or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record_finished(self, workflow_id: int, reasons: dict[str, str]) -> None:
        """Note subjects about to be retired (a subject already recorded keeps its state)."""
        now = _now()
        self._write_many("INSERT OR IGNORE INTO retirements (workflow_id, subject_id, state, finished_reason, "
                         "updated_at) VALUES (?,?,?,?,?)",
                         [(str(workflow_id), sid, "pending", r, now) for sid, r in reasons.items()])

    def mark_retirement(self, workflow_id: int, subject_ids: list[str], state: str, error: str | None = None) -> None:
        """Move subjects to ``state`` ('sending' also counts an attempt) in one transaction."""
        if state not in RETIRE_STATES:
            raise ValueError(f"unknown retirement state {state!r}; expected one of {RETIRE_STATES}")
        attempt = int(state == "sending")
        now = _now()
        self._write_many("UPDATE retirements SET state=?, error=?, attempts=attempts+?, updated_at=? "
                         "WHERE workflow_id=? AND subject_id=?",
                         [(state, error, attempt, now, str(workflow_id), sid) for sid in subject_ids])


def default_retire_state_dir(endpoint: str, workflow_id: int) -> Path:
    """``<state root>/<host[-port]>/workflow-<id>``: one retirement ledger per workflow on each server."""
    host = project_key(endpoint, 0, workflow_id).split("/", 1)[0]
    return state_root() / host / f"workflow-{workflow_id}"


@dataclass(frozen=True)
class RetireOptions:
    """What ``clumptool retire`` was asked for."""

    workflow_id: int
    endpoint: str = DEFAULT_ENDPOINT
    state: Path | None = None
    dry_run: bool = False
    max_subjects: int = DEFAULT_MAX
    partial: bool = False
    batch_size: int = DEFAULT_BATCH


@dataclass
class RetireReport:
    """What a run did (or, for a dry run, would do)."""

    table: str
    ledger: str
    dry_run: bool
    finished: int = 0
    unfinished: int = 0
    already_retired: int = 0
    to_retire: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    retired_now: int = 0
    unknown: list[str] = field(default_factory=list)
    left_for_later: int = 0
    no_longer_finished: int = 0

    def warnings(self) -> list[str]:
        """Lines to print even with --quiet: finished subjects that could not be retired."""
        if not self.unknown:
            return []
        shown = ", ".join(self.unknown[:10]) + (", ..." if len(self.unknown) > 10 else "")
        return [f"warning: {len(self.unknown):,} finished subjects are not subjects of this workflow on the server "
                f"and were not retired: {shown} (check --workflow-id and --endpoint; they are checked again on "
                "the next run)"]

    def format(self, show: int = 20) -> str:
        head = (f"{self.finished:,} finished and {self.unfinished:,} unfinished subjects in {self.table}; "
                f"{self.already_retired:,} already retired by earlier runs (ledger {self.ledger})")
        lines = [head]
        if self.dry_run:
            lines.append(f"dry run: {len(self.to_retire):,} subjects would be retired with reason '{REASON}' "
                         "(nothing was sent):")
            lines += [f"  {sid}  {self.reasons.get(sid) or ''}".rstrip() for sid in self.to_retire[:show]]
            if len(self.to_retire) > show:
                lines.append(f"  ... and {len(self.to_retire) - show:,} more")
        else:
            lines.append(f"retired {self.retired_now:,} subjects now (reason '{REASON}')")
        if self.left_for_later:
            lines.append(f"--partial: {self.left_for_later:,} finished subjects are left for the next runs")
        lines += self.warnings()
        if self.no_longer_finished:
            lines.append(f"note: {self.no_longer_finished:,} subjects retired by earlier runs are no longer finished "
                         "in this table (Zooniverse keeps them retired; unretire them in the Lab if needed)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the subjects table (pure)
# ---------------------------------------------------------------------------------------------


def _flags(values: pd.Series, ids: pd.Series, path: Path) -> np.ndarray:
    """``is_finished`` as booleans; blank means not finished; anything unreadable is an error."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=bool)
    text = values.map(lambda v: str(v).strip().lower() if v is not None else "")
    good = text.isin(_TRUE | _FALSE).to_numpy()
    if not good.all():
        pos = int(np.flatnonzero(~good)[0])
        raise ClumptoolError(f"{where(path, f'subject_id {ids.iloc[pos]}', 'is_finished')}: {values.iloc[pos]!r} is "
                             "not true or false; give the subjects table written by clumptool aggregate")
    return text.isin(_TRUE).to_numpy()


def finished_subjects(path: str | os.PathLike) -> tuple[dict[str, str], int]:
    """(subject id -> finished_reason for the finished subjects, number of unfinished subjects).

    A subject listed on several rows is finished only if every row says so.
    """
    path = Path(path)
    table = read_table(path)
    missing = [c for c in ("subject_id", "is_finished") if c not in table.columns]
    if missing:
        raise ClumptoolError(f"{path}: no {' or '.join(missing)} column, so not a subjects table of clumptool "
                             "aggregate; give its subjects.parquet (or .csv), aggregated with this version (it "
                             "writes is_finished and finished_reason)")
    ids = subject_ids_int64(table["subject_id"], where=path, field="subject_id").astype(str)
    flags = pd.Series(_flags(table["is_finished"], ids, path), index=table.index)
    reasons = table["finished_reason"].astype(object) if "finished_reason" in table.columns else pd.Series(
        "", index=table.index, dtype=object)
    per_subject = flags.groupby(ids.to_numpy()).all()
    finished = {sid: "" for sid in sorted(per_subject.index[per_subject.to_numpy()], key=int)}
    for sid, reason in zip(ids, reasons, strict=True):
        if sid in finished and not finished[sid] and isinstance(reason, str):
            finished[sid] = reason
    return finished, int((~per_subject).sum())


# ---------------------------------------------------------------------------------------------
# talking to Zooniverse
# ---------------------------------------------------------------------------------------------


def _workflow(session: Session, options: RetireOptions):
    pc = session.pc
    try:
        return pc.Workflow.find(options.workflow_id)
    except pc.panoptes.PanoptesAPIException as exc:
        raise ClumptoolError(f"--workflow-id {options.workflow_id}: not found or not accessible at "
                             f"{options.endpoint} ({session.clean(exc)}); check the id and --endpoint") from exc


def _known(session: Session, workflow, subject_ids: list[str]) -> set[str]:
    """The subjects of ``subject_ids`` that exist and sit in one of the workflow's subject sets."""
    sets = {str(s) for s in (workflow.raw.get("links") or {}).get("subject_sets") or []}
    known: set[str] = set()
    for start in range(0, len(subject_ids), 100):
        chunk = subject_ids[start:start + 100]
        for subject in session.pc.Subject.where(id=",".join(chunk), page_size=100):
            linked = {str(s) for s in (subject.raw.get("links") or {}).get("subject_sets") or []}
            if linked & sets:
                known.add(str(subject.id))
    return known


def _check(options: RetireOptions) -> None:
    problems = []
    if options.max_subjects < 0:
        problems.append(f"--max {options.max_subjects}: give 0 or more subjects")
    if not 1 <= options.batch_size <= 500:
        problems.append(f"--batch-size {options.batch_size}: give 1 to 500 subjects per request")
    if problems:
        raise ClumptoolError("; ".join(problems))


def retire_finished(table: str | os.PathLike, options: RetireOptions, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> RetireReport:
    """Retire the finished subjects of ``table`` in ``options.workflow_id`` (see the module docstring)."""
    _check(options)
    endpoint = check_endpoint(options.endpoint)
    finished, unfinished = finished_subjects(table)
    state_dir = Path(options.state) if options.state is not None else default_retire_state_dir(
        endpoint, options.workflow_id)
    ledger_path = state_dir / DEFAULT_LEDGER_NAME
    report = RetireReport(table=str(table), ledger=str(ledger_path), dry_run=options.dry_run,
                          finished=len(finished), unfinished=unfinished, reasons=finished)
    if options.dry_run and not ledger_path.exists():
        states: dict[str, str] = {}
        ledger = None
    else:
        try:
            ledger = RetirementLedger(ledger_path)
        except OSError as exc:
            raise ClumptoolError(f"--state {state_dir}: cannot open the ledger ({exc.strerror or exc}); choose a "
                                 "writable --state folder") from exc
        states = ledger.retirement_states(options.workflow_id)
    retired = {sid for sid, st in states.items() if st == "retired"}
    report.already_retired = len(retired & finished.keys())
    report.no_longer_finished = len(retired - finished.keys())
    todo = [sid for sid in finished if sid not in retired]
    if len(todo) > options.max_subjects:
        if not options.partial:
            if ledger is not None:
                ledger.close()
            raise ClumptoolError(
                f"{len(todo):,} finished subjects of {table} are still to be retired, more than --max "
                f"{options.max_subjects:,}; check the subjects table (a loose --retire-below in aggregate finishes "
                f"too many), then raise --max to {len(todo)} to retire them all, or add --partial to retire the "
                f"first {options.max_subjects:,} now and the rest on later runs")
        report.left_for_later = len(todo) - options.max_subjects
        todo = todo[:options.max_subjects]
    report.to_retire = todo
    if options.dry_run or not todo:
        if ledger is not None:
            ledger.close()
        return report
    try:
        _send(ledger, todo, finished, options, endpoint, report, progress, log)
    finally:
        ledger.close()
    return report


def _send(ledger: RetirementLedger, todo: list[str], finished: dict[str, str], options: RetireOptions,
          endpoint: str, report: RetireReport, progress: bool, log: Callable[[str], None] | None) -> None:
    wid = options.workflow_id
    ledger.record_finished(wid, {sid: finished[sid] for sid in todo})
    with panoptes_session(endpoint) as session:
        pc = session.pc
        workflow = _workflow(session, options)
        with tqdm(total=len(todo), desc="retiring subjects", unit="subject", disable=not progress,
                  leave=False) as bar:
            for start in range(0, len(todo), options.batch_size):
                batch = todo[start:start + options.batch_size]
                assert all(sid in finished for sid in batch), "only finished subjects are ever retired"
                try:
                    known = _known(session, workflow, batch)
                    unknown = [sid for sid in batch if sid not in known]
                    if unknown:
                        ledger.mark_retirement(wid, unknown, "unknown", f"not a subject of workflow {wid} at "
                                                                        f"{endpoint}")
                        report.unknown += unknown
                    send = [sid for sid in batch if sid in known]
                    if send:
                        ledger.mark_retirement(wid, send, "sending")
                        workflow.retire_subjects(send, reason=REASON, batch_size=len(send))
                        ledger.mark_retirement(wid, send, "retired")
                        report.retired_now += len(send)
                except (pc.panoptes.PanoptesAPIException, OSError, ValueError, KeyError) as exc:
                    message = session.clean(exc)
                    raise ClumptoolError(
                        f"retiring subjects in workflow {wid} at {endpoint} failed after {report.retired_now:,} of "
                        f"{len(todo):,} were retired in this run ({message}); run the same command again to "
                        "resume: subjects already retired are not sent again") from None
                bar.update(len(batch))
                if log is not None and report.retired_now:
                    log(f"retired {report.retired_now:,} of {len(todo):,}")
