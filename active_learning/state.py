"""Where the upload ledger lives: one ledger per Zooniverse project and workflow, shared by every round.

A new ``--out`` per active-learning round is the natural way to work, so the ledger cannot live in ``--out``
(a fresh folder would mean a fresh ledger, and the same galaxies uploaded again). By default it lives in a
per-user state folder keyed by the endpoint's host, the project and the workflow::

    $CLUMPTOOL_STATE_DIR | $XDG_STATE_HOME/clumptool | ~/.local/state/clumptool
        /<endpoint host[-port]>/project-<id>-workflow-<id|none>/al_ledger.sqlite
        /local/al_ledger.sqlite              (selections made without --project-id)

``--state DIR`` overrides it (the ledger is then ``DIR/al_ledger.sqlite``). It must not be inside ``--out``,
which each run replaces as a whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from clumptool.common.errors import ClumptoolError

STATE_ENV = "CLUMPTOOL_STATE_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def state_root(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user folder holding every ledger (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser() / "clumptool"
    return Path.home() / ".local" / "state" / "clumptool"


def project_key(endpoint: str, project_id: int | None, workflow_id: int | None) -> str:
    """``<host[-port]>/project-<id>-workflow-<id|none>`` (or ``local``): the ledger's identity."""
    if project_id is None:
        return "local"
    parts = urlsplit(endpoint)
    host = parts.hostname or "unknown-host"
    if parts.port:
        host = f"{host}-{parts.port}"
    return f"{_UNSAFE.sub('_', host)}/project-{project_id}-workflow-{workflow_id if workflow_id else 'none'}"


def default_state_dir(endpoint: str, project_id: int | None, workflow_id: int | None,
                      environ: Mapping[str, str] | None = None) -> Path:
    """The folder of the ledger shared by every round of this project and workflow on this endpoint."""
    return state_root(environ) / project_key(endpoint, project_id, workflow_id)


def check_state_location(state: Path, out: Path) -> Path:
    """Fail early when the ledger folder cannot be written or would be replaced with ``--out``."""
    state, out = Path(state), Path(out)
    s, o = state.resolve(), out.resolve()
    if s == o or o in s.parents:
        raise ClumptoolError(f"--state {state}: the ledger must not be inside --out {out} (each run replaces "
                             "--out as a whole); choose another --state folder or leave it out for the default")
    if state.exists() and not state.is_dir():
        raise ClumptoolError(f"--state {state}: exists and is not a folder; give a folder for the ledger")
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClumptoolError(f"--state {state}: cannot create the ledger folder ({exc.strerror or exc}); "
                             f"choose another --state or set {STATE_ENV}") from exc
    if not os.access(state, os.W_OK | os.X_OK):
        raise ClumptoolError(f"--state {state}: the ledger folder is not writable; choose another --state or "
                             f"set {STATE_ENV}")
    return state
