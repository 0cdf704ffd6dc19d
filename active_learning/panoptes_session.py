"""A logged-in Panoptes session for one command: endpoint checks, credentials, quiet and scrubbed client logs.

Shared by every command that talks to Zooniverse (``select-next-batch --upload``, ``fetch-export``, ``retire``).
Credentials come only from the environment (``PANOPTES_USERNAME``/``PANOPTES_PASSWORD``, or
``PANOPTES_CLIENT_ID``/``PANOPTES_CLIENT_SECRET``), are never logged, and are scrubbed (with the bearer and
refresh tokens) from every message clumptool prints or stores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from clumptool.common.errors import ClumptoolError

DEFAULT_ENDPOINT = "https://www.zooniverse.org"
STAGING_ENDPOINT = "https://panoptes-staging.zooniverse.org"
_QUIET_LOGGERS = ("panoptes_client", "redo", "urllib3", "requests")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def redact_url(url: object) -> str:
    """``url`` with the password of a ``user:password@`` part replaced by ``***`` (for messages)."""
    text = str(url)
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", text)


def check_endpoint(endpoint: str) -> str:
    """The Panoptes endpoint, validated before any work: ``https://host[:port]`` (plain http only on loopback),
    no credentials in it (they come from PANOPTES_* only), no trailing slash."""
    shown = redact_url(endpoint)
    try:
        parts = urlsplit(str(endpoint).strip())
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise ClumptoolError(f"--endpoint {shown}: not a valid URL ({redact_url(exc)}); give e.g. "
                             f"{DEFAULT_ENDPOINT}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ClumptoolError(f"--endpoint {shown}: not an http(s) URL with a host; give e.g. {DEFAULT_ENDPOINT}")
    if parts.username is not None or parts.password is not None:
        raise ClumptoolError(f"--endpoint {shown}: remove the user:password@ part; Zooniverse credentials are "
                             "read only from the environment (PANOPTES_USERNAME and PANOPTES_PASSWORD, or "
                             "PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET)")
    if parts.query or parts.fragment or parts.path.strip("/"):
        raise ClumptoolError(f"--endpoint {shown}: give only scheme and host (e.g. {DEFAULT_ENDPOINT}), "
                             "without a path or query")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise ClumptoolError(f"--endpoint {shown}: plain http would send the password unencrypted; use https "
                             "(plain http is accepted only for a local server on 127.0.0.1)")
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def credentials_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Zooniverse credentials from the environment: ``{"username", "password"}`` or
    ``{"client_id", "client_secret"}``. Raises ClumptoolError naming the variables when neither is set."""
    env = os.environ if environ is None else environ
    user, password = env.get("PANOPTES_USERNAME"), env.get("PANOPTES_PASSWORD")
    if user and password:
        return {"username": user, "password": password}
    cid, secret = env.get("PANOPTES_CLIENT_ID"), env.get("PANOPTES_CLIENT_SECRET")
    if cid and secret:
        return {"client_id": cid, "client_secret": secret}
    half = [name for name, value in (("PANOPTES_USERNAME", user), ("PANOPTES_PASSWORD", password),
                                     ("PANOPTES_CLIENT_ID", cid), ("PANOPTES_CLIENT_SECRET", secret)) if value]
    hint = f" (only {', '.join(half)} is set)" if half else ""
    raise ClumptoolError("no Zooniverse credentials: set PANOPTES_USERNAME and PANOPTES_PASSWORD, or "
                         f"PANOPTES_CLIENT_ID and PANOPTES_CLIENT_SECRET, in the environment{hint}")


def import_panoptes_client():
    """Import ``panoptes_client`` without letting it reconfigure logging.

    On import the client calls ``logging.basicConfig`` (INFO on the root logger), which would make every
    library's INFO messages print; the root logger is put back as it was.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fresh = "panoptes_client" not in sys.modules
    import panoptes_client  # here, not at the top: its import side effect on logging is undone just below

    if fresh:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return panoptes_client


def redact(text: object, secrets: list[str] | tuple[str, ...]) -> str:
    """``text`` with every secret (password, client secret, token) replaced by ``***``."""
    out = str(text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out


class _RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextlib.contextmanager
def quiet_client_logs(secrets: list[str]) -> Iterator[None]:
    """Client chatter at WARNING and above only, with secrets scrubbed, for the duration of an upload."""
    saved = []
    flt = _RedactFilter(secrets)
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addFilter(flt)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
            logger.removeFilter(flt)


def clean_message(exc: object, secrets: list[str]) -> str:
    """An exception as a message safe to print or store: secrets and URL signatures removed, at most 500
    characters."""
    text = redact(exc, secrets)
    text = re.sub(r"\?[^\s'\"]*sig=[^\s'\"]*", "?<signature>", text)  # signed upload/download URLs
    return text[:500]


def connect(pc, endpoint: str, credentials: dict[str, str], secrets: list[str], admin: bool = False):
    """A logged-in ``panoptes_client.Panoptes`` (the token is fetched now, so a bad password fails here).

    The bearer and refresh tokens are appended to ``secrets`` so that every later message is scrubbed of them.
    """
    try:
        client = pc.Panoptes(endpoint=endpoint, admin=admin, **credentials)
        client.get_bearer_token()
    except pc.panoptes.PanoptesAPIException as exc:
        raise ClumptoolError(f"Zooniverse login failed at {endpoint}: {clean_message(exc, secrets)}; check "
                             "PANOPTES_USERNAME and PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID and "
                             "PANOPTES_CLIENT_SECRET) and --endpoint") from exc
    except (KeyError, ValueError) as exc:
        raise ClumptoolError(f"--endpoint {endpoint} did not answer like a Zooniverse (Panoptes) "
                             f"API ({clean_message(exc, secrets)}); check the URL") from exc
    except Exception as exc:
        raise ClumptoolError(f"--endpoint {endpoint}: cannot reach the server "
                             f"({clean_message(exc, secrets)}); check the URL and the network, then run again") from exc
    if client.bearer_token:
        secrets.append(client.bearer_token)
    if getattr(client, "refresh_token", None):
        secrets.append(client.refresh_token)
    return client


@dataclass
class Session:
    """A logged-in client for one command: the client module, the client and the secrets to scrub."""

    pc: object
    client: object
    secrets: list[str]

    def clean(self, exc: object) -> str:
        return clean_message(exc, self.secrets)


@contextlib.contextmanager
def panoptes_session(endpoint: str, admin: bool = False) -> Iterator[Session]:
    """Log in to ``endpoint`` with the environment's credentials (as select-next-batch does) for a block.

    Client logging is kept at WARNING with secrets scrubbed; a ClumptoolError raised inside is scrubbed too.
    """
    endpoint = check_endpoint(endpoint)
    credentials = credentials_from_env()
    secrets = [v for k, v in credentials.items() if k in ("password", "client_secret")]
    pc = import_panoptes_client()
    with quiet_client_logs(secrets):
        client = connect(pc, endpoint, credentials, secrets, admin)
        with client:
            try:
                yield Session(pc, client, secrets)
            except ClumptoolError as exc:
                raise ClumptoolError(redact(exc, secrets)) from None


