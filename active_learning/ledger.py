"""The local upload ledger: one SQLite row per galaxy per active-learning round.

Why a ledger: an upload to Zooniverse can stop half way (network drop, subject quota, Ctrl-C). The ledger
records what was selected and how far each galaxy got (selected -> created -> uploaded -> linked, or failed)
together with the Zooniverse subject id, so the next call resumes exactly where the last one stopped: no
galaxy is uploaded twice and none is skipped. It also tells the selector which galaxies earlier rounds
already took. Every write is committed at once, so the file is consistent after any crash.

The ledger never stores credentials: only ids, states, selection scores and error messages (which the
uploader redacts).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import normalise_subject_ids

#: Upload states of a galaxy in a round, in pipeline order ('failed' can happen at any step).
STATES = ("selected", "created", "uploaded", "linked", "failed")

#: Default file name of the ledger inside an output or ``--state`` folder.
DEFAULT_LEDGER_NAME = "al_ledger.sqlite"

#: Selection columns copied from the selection table (all optional except galaxy_id).
SELECTION_COLUMNS = ("score", "strategy", "rank", "control")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS galaxies (
    galaxy_id        TEXT NOT NULL,
    round            TEXT NOT NULL,
    subject_set_name TEXT,
    state            TEXT NOT NULL,
    subject_id       TEXT,
    error            TEXT,
    create_pending   INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    score            REAL,
    strategy         TEXT,
    rank             INTEGER,
    control          INTEGER,
    selected_at      TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (galaxy_id, round)
);
CREATE INDEX IF NOT EXISTS galaxies_round ON galaxies (round, state);
CREATE TABLE IF NOT EXISTS rounds (
    round            TEXT PRIMARY KEY,
    subject_set_name TEXT,
    subject_set_id   TEXT,
    project_id       TEXT,
    workflow_id      TEXT,
    endpoint         TEXT,
    updated_at       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');
"""

_ROW_COLUMNS = ("galaxy_id", "round", "subject_set_name", "state", "subject_id", "error", "create_pending",
                "attempts", "score", "strategy", "rank", "control", "selected_at", "updated_at")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _opt_float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _opt_int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _opt_str(value) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


class Ledger:
    """The SQLite ledger at ``path`` (created on first use; safe to share between threads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / DEFAULT_LEDGER_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # WAL + NORMAL: each commit survives a crash or Ctrl-C of this process without an fsync per
            # state change (which cost ~20 ms each, more than the upload itself against a fast server).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ClumptoolError(f"{self.path}: not a clumptool ledger ({exc})") from exc
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exec(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, params)

    # -- selection ---------------------------------------------------------------------------------
    def record_selection(self, round_name: str, rows: pd.DataFrame, subject_set_name: str | None = None) -> int:
        """Record the galaxies selected for ``round_name``; returns how many rows were new.

        Idempotent: a galaxy already recorded for this round keeps its state and subject id; its selection
        fields (score, strategy, rank, control) are refreshed only while it is still just 'selected'.
        """
        if "galaxy_id" not in rows.columns:
            raise ClumptoolError("selection has no 'galaxy_id' column")
        ids = normalise_subject_ids(rows["galaxy_id"], where="selection")
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].iloc[0]
            raise ClumptoolError(f"selection lists galaxy_id {dup!r} twice")
        now = _now()
        new = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for gid, (_, row) in zip(ids, rows.iterrows(), strict=True):
                    values = (_opt_float(row.get("score")), _opt_str(row.get("strategy")),
                              _opt_int(row.get("rank")), _opt_int(row.get("control")))
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO galaxies (galaxy_id, round, subject_set_name, state, score, "
                        "strategy, rank, control, selected_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (gid, round_name, subject_set_name, "selected", *values, now, now))
                    if cur.rowcount:
                        new += 1
                    else:
                        self._db.execute(
                            "UPDATE galaxies SET score=?, strategy=?, rank=?, control=?, "
                            "subject_set_name=COALESCE(?, subject_set_name) "
                            "WHERE galaxy_id=? AND round=? AND state='selected' AND subject_id IS NULL",
                            (*values, subject_set_name, gid, round_name))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def already_taken(self, exclude_round: str | None = None) -> set[str]:
        """Galaxy ids recorded in any round other than ``exclude_round`` (to remove from the pool)."""
        cur = self._exec("SELECT DISTINCT galaxy_id FROM galaxies WHERE round IS NOT ?", (exclude_round,))
        return {r[0] for r in cur.fetchall()}

    def uploaded_elsewhere(self, round_name: str) -> dict[str, str]:
        """galaxy id -> round, for galaxies that another round created on Zooniverse (or may have)."""
        cur = self._exec("SELECT galaxy_id, round FROM galaxies WHERE round IS NOT ? AND (subject_id IS NOT NULL "
                         "OR create_pending = 1 OR state IN ('created', 'uploaded', 'linked')) ORDER BY round",
                         (round_name,))
        out: dict[str, str] = {}
        for gid, rnd in cur.fetchall():
            out.setdefault(gid, rnd)
        return out

    def rounds(self) -> list[str]:
        """Round names in the order they were first recorded."""
        cur = self._exec("SELECT round, MIN(selected_at) AS t FROM galaxies GROUP BY round ORDER BY t, round")
        return [r[0] for r in cur.fetchall()]

    # -- state ---------------------------------------------------------------------------------------
    def rows(self, round_name: str) -> pd.DataFrame:
        """Every row of a round, ordered by rank then galaxy id."""
        cur = self._exec(f"SELECT {', '.join(_ROW_COLUMNS)} FROM galaxies WHERE round=? "
                         "ORDER BY rank IS NULL, rank, galaxy_id", (round_name,))
        return pd.DataFrame(cur.fetchall(), columns=list(_ROW_COLUMNS))

    def pending(self, round_name: str) -> pd.DataFrame:
        """Rows of a round that are not yet linked on Zooniverse (what an upload still has to do)."""
        rows = self.rows(round_name)
        return rows[rows["state"] != "linked"].reset_index(drop=True)

    def get(self, galaxy_id: str, round_name: str) -> dict | None:
        cur = self._exec(f"SELECT {', '.join(_ROW_COLUMNS)} FROM galaxies WHERE galaxy_id=? AND round=?",
                         (str(galaxy_id), round_name))
        row = cur.fetchone()
        return None if row is None else dict(zip(_ROW_COLUMNS, row, strict=True))

    def mark(self, galaxy_id: str, round_name: str, state: str, subject_id: str | None = None,
             error: str | None = None, clear_subject: bool = False) -> None:
        """Move a galaxy to ``state``; a given ``subject_id`` is stored, None keeps the stored one
        (``clear_subject=True`` forgets it, after the subject was deleted). ``error`` replaces the
        stored error (None clears it)."""
        if state not in STATES:
            raise ValueError(f"unknown ledger state {state!r}; expected one of {STATES}")
        sid = None if subject_id is None else str(subject_id)
        cur = self._exec(
            "UPDATE galaxies SET state=?, subject_id=CASE WHEN ? THEN NULL ELSE COALESCE(?, subject_id) END, "
            "error=?, create_pending=CASE WHEN ? IS NOT NULL OR ? THEN 0 ELSE create_pending END, updated_at=? "
            "WHERE galaxy_id=? AND round=?",
            (state, int(clear_subject), sid, error, sid, int(clear_subject), _now(), str(galaxy_id), round_name))
        if cur.rowcount == 0:
            raise ClumptoolError(f"{self.path}: galaxy {galaxy_id!r} was never selected for round {round_name!r}")

    def begin_create(self, galaxy_id: str, round_name: str) -> None:
        """Note that a create request is about to be sent: if the run dies before the answer, the next run
        knows a subject may exist on the server without its id here, and looks for it."""
        self._exec("UPDATE galaxies SET create_pending=1, attempts=attempts+1, updated_at=? "
                   "WHERE galaxy_id=? AND round=?", (_now(), str(galaxy_id), round_name))

    def end_create(self, galaxy_id: str, round_name: str) -> None:
        """The create request certainly did not create anything (the server answered with an error)."""
        self._exec("UPDATE galaxies SET create_pending=0, updated_at=? WHERE galaxy_id=? AND round=?",
                   (_now(), str(galaxy_id), round_name))

    def summary(self, round_name: str) -> dict[str, int]:
        """Counts per state for a round (every state present, plus 'total')."""
        counts = {s: 0 for s in STATES}
        for state, n in self._exec("SELECT state, COUNT(*) FROM galaxies WHERE round=? GROUP BY state",
                                   (round_name,)).fetchall():
            counts[state] = n
        counts["total"] = sum(counts[s] for s in STATES)
        return counts

    # -- round bookkeeping ---------------------------------------------------------------------------
    def set_round_info(self, round_name: str, **info: str | int | None) -> None:
        """Remember where a round went (subject_set_name/_id, project_id, workflow_id, endpoint)."""
        allowed = {"subject_set_name", "subject_set_id", "project_id", "workflow_id", "endpoint"}
        unknown = set(info) - allowed
        if unknown:
            raise ValueError(f"unknown round fields {sorted(unknown)}")
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO rounds (round, updated_at) VALUES (?, ?)",
                             (round_name, _now()))
            for key, value in info.items():
                if value is not None:
                    self._db.execute(f"UPDATE rounds SET {key}=?, updated_at=? WHERE round=?",
                                     (str(value), _now(), round_name))

    def round_info(self, round_name: str) -> dict[str, str | None]:
        cur = self._exec("SELECT round, subject_set_name, subject_set_id, project_id, workflow_id, endpoint, "
                         "updated_at FROM rounds WHERE round=?", (round_name,))
        row = cur.fetchone()
        keys = ("round", "subject_set_name", "subject_set_id", "project_id", "workflow_id", "endpoint",
                "updated_at")
        return dict(zip(keys, row, strict=True)) if row else {}
