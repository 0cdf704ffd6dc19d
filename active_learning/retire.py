"""``clumptool retire``: retire on Zooniverse the galaxies whose consensus aggregate calls finished.

The subjects table of ``clumptool aggregate`` says per galaxy whether its consensus is finished
(``is_finished``, and why in ``finished_reason``: :mod:`clumptool.aggregation.stopping`). Retiring those
subjects (``Workflow.retire_subjects(ids, reason='consensus')``) stops Zooniverse from showing them to more
volunteers. Only rows whose ``is_finished`` is true are ever sent; a blank or false value never is.

With ``stalled`` (``--stalled``) the *stalled* galaxies (``is_stalled``: not finished, and the classifications
left before the retirement limit are not expected to settle them) are retired too, with reason ``'other'``, so
Zooniverse (and its subjects export) tells them apart from the finished ones; without it they are never sent.
Each request carries one reason; the ledger records the reason each subject was sent with, and a subject
retired once is never sent again, whatever the table says later (Zooniverse keeps its first reason).

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
from clumptool.common.tables import read_table, true_false_column

REASON = "consensus"
STALLED_REASON = "other"
#: Zooniverse retirement reasons in the order their requests are sent.
REASONS = (REASON, STALLED_REASON)
DEFAULT_MAX = 1000
DEFAULT_BATCH = 50
RETIRE_STATES = ("pending", "sending", "retired", "unknown")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retirements (
    workflow_id      TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    finished_reason  TEXT,
    retirement_reason TEXT,
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
            self._add_reason_column()
        except sqlite3.DatabaseError as exc:
            raise ClumptoolError(f"{self.path}: not a clumptool ledger ({exc})") from exc

    def _add_reason_column(self) -> None:
        """Ledgers written before ``--stalled`` lack ``retirement_reason``: add it (their rows read as 'consensus')."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(retirements)")}
        if "retirement_reason" in columns:
            return
        try:
            self._db.execute("ALTER TABLE retirements ADD COLUMN retirement_reason TEXT")
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise

    def retirement_states(self, workflow_id: int) -> dict[str, str]:
        """subject id -> state, for every subject recorded for ``workflow_id``."""
        cur = self._exec("SELECT subject_id, state FROM retirements WHERE workflow_id=?", (str(workflow_id),))
        return dict(cur.fetchall())

    def retirement_reasons(self, workflow_id: int) -> dict[str, str]:
        """subject id -> the Zooniverse reason it was (or is to be) retired with, for ``workflow_id``.

        Rows from before the column existed were all sent with 'consensus'."""
        cur = self._exec("SELECT subject_id, COALESCE(retirement_reason, ?) FROM retirements WHERE workflow_id=?",
                         (REASON, str(workflow_id)))
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

    def record_pending(self, workflow_id: int, reasons: dict[str, tuple[str, str]]) -> None:
        """Note subjects about to be retired: subject id -> (finished_reason, Zooniverse reason).

        A subject already recorded keeps its state; its reasons are updated unless a request with them may
        already have reached the server ('sending' or 'retired')."""
        now = _now()
        self._write_many("INSERT INTO retirements (workflow_id, subject_id, state, finished_reason, retirement_reason, "
                         "updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT (workflow_id, subject_id) DO UPDATE SET "
                         "finished_reason=excluded.finished_reason, retirement_reason=excluded.retirement_reason "
                         "WHERE state NOT IN ('sending', 'retired')",
                         [(str(workflow_id), sid, "pending", text, reason, now)
                          for sid, (text, reason) in reasons.items()])

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
    stalled: bool = False  # also retire the stalled subjects, with reason STALLED_REASON


def _by_reason(reasons: dict[str, str], subject_ids) -> dict[str, int]:
    """How many of ``subject_ids`` have each reason of ``reasons`` (subject id -> reason), in REASONS order."""
    counts = dict.fromkeys(REASONS, 0)
    for sid in subject_ids:
        counts[reasons[sid]] = counts.get(reasons[sid], 0) + 1
    return counts


@dataclass
class RetireReport:
    """What a run did (or, for a dry run, would do)."""

    table: str
    ledger: str
    dry_run: bool
    finished: int = 0
    unfinished: int = 0
    stalled: int | None = None          # stalled subjects in the table (None: it has no is_stalled column)
    with_stalled: bool = False          # --stalled was given
    already_retired: int = 0
    already_by_reason: dict[str, int] = field(default_factory=dict)
    reason_changed: int = 0             # retired earlier with another reason than the table gives now
    to_retire: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)          # subject id -> finished_reason
    retire_reasons: dict[str, str] = field(default_factory=dict)   # subject id -> Zooniverse reason, to_retire's
    retired_now: int = 0
    retired_by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    unknown: list[str] = field(default_factory=list)
    left_for_later: int = 0
    no_longer_finished: int = 0

    def warnings(self) -> list[str]:
        """Lines to print even with --quiet: subjects to retire that could not be retired."""
        if not self.unknown:
            return []
        shown = ", ".join(self.unknown[:10]) + (", ..." if len(self.unknown) > 10 else "")
        return [f"warning: {len(self.unknown):,} subjects to retire are not subjects of this workflow on the server "
                f"and were not retired: {shown} (check --workflow-id and --endpoint; they are checked again on "
                "the next run)"]

    def _head(self) -> str:
        stalled = f" ({self.stalled:,} of them stalled)" if self.stalled else ""
        already = ", ".join(f"{n:,} '{r}'" for r, n in self.already_by_reason.items() if n)
        return (f"{self.finished:,} finished and {self.unfinished:,} unfinished subjects{stalled} in {self.table}; "
                f"{self.already_retired:,} already retired by earlier runs{f' ({already})' if already else ''} "
                f"(ledger {self.ledger})")

    def _stalled_note(self) -> list[str]:
        if not self.with_stalled and self.stalled:
            return [f"{self.stalled:,} stalled subjects are not retired (add --stalled to retire them with reason "
                    f"'{STALLED_REASON}'; look at them yourself)"]
        return []

    def format(self, show: int = 20) -> str:
        lines = [self._head()]
        if self.dry_run:
            counts = _by_reason(self.retire_reasons, self.to_retire)
            stalled = (f" and {counts[STALLED_REASON]:,} stalled with reason '{STALLED_REASON}'"
                       if self.with_stalled or counts[STALLED_REASON] else "")
            lines.append(f"dry run: {len(self.to_retire):,} subjects would be retired, {counts[REASON]:,} with reason "
                         f"'{REASON}'{stalled} (nothing was sent):")
            lines += [f"  {sid}  {self.retire_reasons[sid]:<9}  {self.reasons.get(sid) or ''}".rstrip()
                      for sid in self.to_retire[:show]]
            if len(self.to_retire) > show:
                lines.append(f"  ... and {len(self.to_retire) - show:,} more")
        else:
            others = self.retired_by_reason.get(STALLED_REASON, 0)
            stalled = f" and {others:,} stalled (reason '{STALLED_REASON}')" if self.with_stalled or others else ""
            lines.append(f"retired {self.retired_by_reason[REASON]:,} subjects now (reason '{REASON}'){stalled}")
        lines += self._stalled_note()
        if self.left_for_later:
            lines.append(f"--partial: {self.left_for_later:,} subjects to retire are left for the next runs")
        lines += self.warnings()
        if self.reason_changed:
            lines.append(f"note: {self.reason_changed:,} subjects retired by earlier runs with another reason (stalled "
                         "then, finished now, or the reverse) are not sent again (Zooniverse keeps their first reason)")
        if self.no_longer_finished:
            lines.append(f"note: {self.no_longer_finished:,} subjects retired by earlier runs are no longer finished "
                         "(or stalled) in this table (Zooniverse keeps them retired; unretire them in the Lab if "
                         "needed)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the subjects table (pure)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectsTable:
    """What a subjects table says about retiring its galaxies."""

    finished: dict[str, str]         # subject id -> finished_reason, in id order
    stalled: dict[str, str] | None   # the same for the stalled subjects; None: the table has no is_stalled column
    unfinished: int                  # subjects not finished (the stalled ones included)

    def retirable(self, stalled: bool) -> dict[str, str]:
        """subject id -> Zooniverse reason for the subjects to retire: the finished ones, and with ``stalled``
        the stalled ones (finished first, each in id order)."""
        out = dict.fromkeys(self.finished, REASON)
        if stalled:
            out.update(dict.fromkeys(self.stalled or {}, STALLED_REASON))
        return out


def _every_row(flags: np.ndarray, ids: pd.Series) -> pd.Series:
    """subject id -> whether every one of its rows has the flag."""
    return pd.Series(flags, index=ids.index).groupby(ids.to_numpy()).all()


def read_subjects_table(path: str | os.PathLike) -> SubjectsTable:
    """The finished and stalled subjects of aggregate's subjects table (with their ``finished_reason``).

    A subject listed on several rows is finished (stalled) only if every row says so; a row both finished and
    stalled is an error (aggregate never writes one).
    """
    path = Path(path)
    table = read_table(path)
    missing = [c for c in ("subject_id", "is_finished") if c not in table.columns]
    if missing:
        raise ClumptoolError(f"{path}: no {' or '.join(missing)} column, so not a subjects table of clumptool "
                             "aggregate; give its subjects.parquet (or .csv), aggregated with this version (it "
                             "writes is_finished and finished_reason)")
    ids = subject_ids_int64(table["subject_id"], where=path, field="subject_id").astype(str)
    finished_rows = true_false_column(table["is_finished"], ids, path, "is_finished")
    has_stalled = "is_stalled" in table.columns
    stalled_rows = true_false_column(table["is_stalled"], ids, path, "is_stalled") if has_stalled else np.zeros(len(ids), bool)
    both = finished_rows & stalled_rows
    if both.any():
        pos = int(np.flatnonzero(both)[0])
        raise ClumptoolError(f"{where(path, f'subject_id {ids.iloc[pos]}', 'is_stalled')}: true while is_finished is "
                             "true too, but a galaxy is never both; give the subjects table written by clumptool "
                             "aggregate")
    is_finished, is_stalled = _every_row(finished_rows, ids), _every_row(stalled_rows, ids)
    texts = table["finished_reason"].astype(object) if "finished_reason" in table.columns else pd.Series(
        "", index=table.index, dtype=object)
    first_text: dict[str, str] = {}
    for sid, text in zip(ids, texts, strict=True):
        if isinstance(text, str) and text and sid not in first_text:
            first_text[sid] = text

    def with_text(flag: pd.Series) -> dict[str, str]:
        return {sid: first_text.get(sid, "") for sid in sorted(flag.index[flag.to_numpy()], key=int)}

    return SubjectsTable(finished=with_text(is_finished), stalled=with_text(is_stalled) if has_stalled else None,
                         unfinished=int((~is_finished).sum()))


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
        try:
            for subject in session.pc.Subject.where(id=",".join(chunk), page_size=100):
                linked = {str(s) for s in (subject.raw.get("links") or {}).get("subject_sets") or []}
                if linked & sets:
                    known.add(str(subject.id))
        except session.pc.panoptes.PanoptesAPIException as exc:
            if not str(exc).startswith("Could not find subjects"):  # Panoptes' 404 when none of the ids exists
                raise
    return known


def _check(options: RetireOptions) -> None:
    problems = []
    if options.max_subjects < 0:
        problems.append(f"--max {options.max_subjects}: give 0 or more subjects")
    if not 1 <= options.batch_size <= 500:
        problems.append(f"--batch-size {options.batch_size}: give 1 to 500 subjects per request")
    if problems:
        raise ClumptoolError("; ".join(problems))


def _plan(subjects: SubjectsTable, stalled: bool, states: dict[str, str], recorded: dict[str, str],
          report: RetireReport) -> dict[str, str]:
    """subject id -> Zooniverse reason for the subjects still to retire, given the ledger's ``states`` and
    ``recorded`` reasons; counts what earlier runs retired into ``report``."""
    retired = {sid for sid, st in states.items() if st == "retired"}
    current = subjects.retirable(True)  # the reason the table gives each subject it would retire
    earlier = [sid for sid in current if sid in retired]
    report.already_retired = len(earlier)
    report.already_by_reason = _by_reason(recorded, earlier)
    report.reason_changed = sum(recorded[sid] != current[sid] for sid in earlier)
    report.no_longer_finished = len(retired - current.keys())
    # a request that may have reached the server is sent again with its reason (Zooniverse keeps the first)
    return {sid: recorded[sid] if states.get(sid) == "sending" else reason
            for sid, reason in subjects.retirable(stalled).items() if sid not in retired}


def retire_finished(table: str | os.PathLike, options: RetireOptions, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> RetireReport:
    """Retire the finished subjects of ``table`` in ``options.workflow_id``, and with ``options.stalled`` the
    stalled ones (see the module docstring)."""
    _check(options)
    endpoint = check_endpoint(options.endpoint)
    subjects = read_subjects_table(table)
    if options.stalled and subjects.stalled is None:  # asked for what the table cannot say: nothing sent
        raise ClumptoolError(f"--stalled: {table} has no is_stalled column (aggregated by an older clumptool), so "
                             "its stalled subjects are unknown; aggregate again with this version, or drop --stalled "
                             "to retire only the finished ones")
    state_dir = Path(options.state) if options.state is not None else default_retire_state_dir(
        endpoint, options.workflow_id)
    ledger_path = state_dir / DEFAULT_LEDGER_NAME
    report = RetireReport(table=str(table), ledger=str(ledger_path), dry_run=options.dry_run,
                          finished=len(subjects.finished), unfinished=subjects.unfinished,
                          stalled=None if subjects.stalled is None else len(subjects.stalled),
                          with_stalled=options.stalled, reasons={**subjects.finished, **(subjects.stalled or {})})
    if options.dry_run and not ledger_path.exists():
        states: dict[str, str] = {}
        recorded: dict[str, str] = {}
        ledger = None
    else:
        try:
            ledger = RetirementLedger(ledger_path)
        except OSError as exc:
            raise ClumptoolError(f"--state {state_dir}: cannot open the ledger ({exc.strerror or exc}); choose a "
                                 "writable --state folder") from exc
        states = ledger.retirement_states(options.workflow_id)
        recorded = ledger.retirement_reasons(options.workflow_id)
    todo = _plan(subjects, options.stalled, states, recorded, report)
    if len(todo) > options.max_subjects:
        if not options.partial:
            if ledger is not None:
                ledger.close()
            kinds = "finished or stalled" if options.stalled else "finished"
            raise ClumptoolError(
                f"{len(todo):,} {kinds} subjects of {table} are still to be retired, more than --max "
                f"{options.max_subjects:,}; check the subjects table (a loose --retire-below in aggregate finishes "
                f"too many), then raise --max to {len(todo)} to retire them all, or add --partial to retire the "
                f"first {options.max_subjects:,} now and the rest on later runs")
        report.left_for_later = len(todo) - options.max_subjects
        todo = dict(list(todo.items())[:options.max_subjects])
    assert todo.keys() <= subjects.retirable(options.stalled).keys(), \
        "only finished (with --stalled, also stalled) subjects are ever retired"
    report.to_retire = list(todo)
    report.retire_reasons = todo
    if options.dry_run or not todo:
        if ledger is not None:
            ledger.close()
        return report
    try:
        _send(ledger, todo, options, endpoint, report, progress, log)
    finally:
        ledger.close()
    return report


def _batches(todo: dict[str, str], size: int) -> list[tuple[str, list[str]]]:
    """(Zooniverse reason, subject ids) per request: one reason per request, each reason's subjects in batches
    of ``size``, the reasons in REASONS order."""
    out: list[tuple[str, list[str]]] = []
    for reason in dict.fromkeys([*REASONS, *todo.values()]):
        ids = [sid for sid, r in todo.items() if r == reason]
        out += [(reason, ids[start:start + size]) for start in range(0, len(ids), size)]
    return out


def _send(ledger: RetirementLedger, todo: dict[str, str], options: RetireOptions, endpoint: str,
          report: RetireReport, progress: bool, log: Callable[[str], None] | None) -> None:
    """Retire ``todo`` (subject id -> Zooniverse reason), recording each batch before and after its request."""
    wid = options.workflow_id
    ledger.record_pending(wid, {sid: (report.reasons.get(sid, ""), reason) for sid, reason in todo.items()})
    with panoptes_session(endpoint) as session:
        pc = session.pc
        workflow = _workflow(session, options)
        with tqdm(total=len(todo), desc="retiring subjects", unit="subject", disable=not progress,
                  leave=False) as bar:
            for reason, batch in _batches(todo, options.batch_size):
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
                        workflow.retire_subjects(send, reason=reason, batch_size=len(send))
                        ledger.mark_retirement(wid, send, "retired")
                        report.retired_now += len(send)
                        report.retired_by_reason[reason] = report.retired_by_reason.get(reason, 0) + len(send)
                except (pc.panoptes.PanoptesAPIException, OSError, ValueError, KeyError) as exc:
                    message = session.clean(exc)
                    raise ClumptoolError(
                        f"retiring subjects in workflow {wid} at {endpoint} failed after {report.retired_now:,} of "
                        f"{len(todo):,} were retired in this run ({message}); run the same command again to "
                        "resume: subjects already retired are not sent again") from None
                bar.update(len(batch))
                if log is not None and report.retired_now:
                    log(f"retired {report.retired_now:,} of {len(todo):,}")
