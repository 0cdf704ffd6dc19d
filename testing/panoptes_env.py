"""The real panoptes-client aimed at a local fake Zooniverse: a clean environment and one attempt per request.

Shared by the test suites (upload, select, fetch-export, retire): nothing from the user's shell (credentials,
``PANOPTES_ENDPOINT``, a proxy) may leak into a test, and a fault injected by
:class:`~clumptool.testing.fake_panoptes.FakePanoptes` must surface at once instead of after the client's
retries and sleeps. ``patch`` is anything with pytest's ``monkeypatch`` methods (``setenv``, ``delenv``,
``setattr``), so every change is undone after the test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from clumptool.active_learning.panoptes_session import import_panoptes_client
from clumptool.testing.fake_panoptes import FakePanoptes

#: Environment variables panoptes-client or clumptool read; cleared so the user's shell cannot leak in.
PANOPTES_ENV = ("PANOPTES_USERNAME", "PANOPTES_PASSWORD", "PANOPTES_CLIENT_ID", "PANOPTES_CLIENT_SECRET",
                "PANOPTES_ENDPOINT", "PANOPTES_DEBUG", "PANOPTES_REDIRECT_URL")


def isolate_environment(patch: Any, state_dir: str | os.PathLike) -> None:
    """Ledgers under ``state_dir`` (never ~/.local/state), no Zooniverse variables, no proxy for loopback."""
    patch.setenv("CLUMPTOOL_STATE_DIR", str(state_dir))
    patch.setenv("NO_PROXY", "127.0.0.1,localhost")
    patch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in PANOPTES_ENV:
        patch.delenv(var, raising=False)


def single_attempt_client(patch: Any):
    """The ``panoptes_client`` module, unmodified except that every request and media upload is tried once."""
    pc = import_panoptes_client()
    patch.setattr(pc.panoptes, "HTTP_RETRY_LIMIT", 1)
    patch.setattr(pc.subject, "UPLOAD_RETRY_LIMIT", 1)
    return pc


def forget_sessions(pc) -> None:
    """Drop the client's thread-local login and pending saves, so the next test logs in afresh."""
    pc.Panoptes._local.__dict__.clear()
    pc.Subject._local.__dict__.clear()


@contextlib.contextmanager
def logged_in_fake(patch: Any, user: str, password: str, **server_options: Any) -> Iterator[FakePanoptes]:
    """A running fake Zooniverse that knows ``user``, whose credentials are the environment's (as a user's
    shell would set them); stopped afterwards. A request the fake itself failed to handle (other than a client
    hanging up) fails the test that made it: the fake must not be the thing that broke."""
    with FakePanoptes(users={user: password}, **server_options) as server:
        patch.setenv("PANOPTES_USERNAME", user)
        patch.setenv("PANOPTES_PASSWORD", password)
        yield server
    if server.server_errors:
        raise AssertionError("the fake Panoptes server failed requests: " + "; ".join(server.server_errors))
