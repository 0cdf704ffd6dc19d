"""A loopback fake of the Zooniverse Panoptes API, for tests and ``make demo``.

The real ``panoptes-client`` talks to it unchanged (``endpoint="http://127.0.0.1:PORT"``): the password
login with its CSRF token and session cookie, the OAuth token grants (password, client_credentials,
refresh_token), projects, workflows, subject sets (create, get, list by project and display name), subjects
with signed media PUT URLs that point back at this server, set membership, links, paginated listing and
subject deletion. Media bytes are kept so tests can compare them with the files uploaded.

Data exports as Panoptes serves them: ``POST {projects|workflows}/ID/<type>_export`` starts one (the medium
says ``"state": "creating"`` for ``export_delay`` seconds, then ``"ready"``), ``GET`` the same path describes
it, and its ``src`` serves the CSV (set by tests with :meth:`FakePanoptes.set_export`) with HTTP Range
support. ``POST workflows/ID/retired_subjects`` records retirements (:attr:`FakeState.retirements`) and, like
the real asynchronous worker, silently ignores subjects that are not in the workflow.

Faults can be injected on the n-th request matching a method and path pattern: an HTTP error (500, a 403
quota answer, a failed media PUT) or a dropped connection, either before the request is processed or
after it (the server did the work but the answer is lost). :class:`FakeState` holds the request log, the
objects and the blobs; with ``state_dir`` it persists to a folder so a demo can stop and restart.

Only the standard library is used. Never expose it beyond 127.0.0.1: it has no real security.
"""

from __future__ import annotations

import csv
import hashlib
import http.cookies
import io
import json
import re
import secrets
import signal
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from clumptool.common.atomic import write_bytes_atomic, write_text_atomic
from clumptool.common.errors import ClumptoolError

API_ACCEPT = "application/vnd.api+json"
ALLOWED_MEDIA = ("image/png", "image/jpeg", "image/gif", "image/tiff", "image/svg+xml", "text/plain",
                 "application/json", "audio/mpeg", "audio/mp4", "video/mp4", "video/mpeg")
DEFAULT_USERS = {"clumpbot": "s3cret"}
DEFAULT_APPS = {"clumptool-app": "app-s3cret"}
DEFAULT_PROJECTS = {1234: (5678,)}
EXPORT_PREFIX = "exports/"
EXPORT_TYPES = {"projects": ("classifications", "subjects", "workflows", "workflow_contents"),
                "workflows": ("classifications",)}
RETIREMENT_REASONS = ("classification_count", "flagged", "nothing_here", "consensus", "other", "human")
_EMPTY_EXPORTS = {  # the header line an export of a project with nothing in it has
    "classifications": b"classification_id,user_name,user_id,user_ip,workflow_id,workflow_name,workflow_version,"
                       b"created_at,gold_standard,expert,metadata,annotations,subject_data,subject_ids\n",
    "subjects": b"subject_id,project_id,workflow_id,subject_set_id,metadata,locations,classifications_count,"
                b"retired_at,retirement_reason,created_at,updated_at\n",
    "workflows": b"workflow_id,display_name,version,active,classifications_count,pairwise,grouped,prioritized,"
                 b"primary_language,first_task,tutorial_subject_id,retired_set_member_subjects_count,tasks,"
                 b"retirement,aggregation,strings,minor_version\n",
}


def _export_time(iso: str) -> str:
    """An API time (``2020-01-01T00:00:00Z``) as Zooniverse's CSV exports write it (``2020-01-01 00:00:00 UTC``)."""
    return iso.replace("T", " ").replace("Z", " UTC")


@dataclass
class Fault:
    """Answer the ``nth`` (1-based) request matching ``method`` and the regex ``path`` (searched in the
    path without query) and the ``times - 1`` following ones with an error ``status`` and ``message``, or
    ``drop`` the connection without an answer. With ``after=True`` the request is processed first (the
    object is created), and only the answer is replaced by the fault. ``delay`` (seconds) holds the
    request first; with ``status=0`` the fault is only that delay (e.g. to kill a client at a chosen point).
    ``cut_after >= 0`` answers normally but sends only that many bytes of the body: the connection is then
    dropped (headers announced the whole body), or with ``truncate=True`` the short body is announced as
    complete (a server serving a truncated file)."""

    method: str = "*"
    path: str = ".*"
    nth: int = 1
    times: int = 1
    status: int = 500
    message: str = "Internal Server Error"
    drop: bool = False
    after: bool = False
    delay: float = 0.0
    cut_after: int = -1
    truncate: bool = False
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and re.search(self.path, path) is not None


@dataclass
class FakeState:
    """Everything the fake server knows; tests read it directly (take ``lock`` while the server runs)."""

    users: dict[str, dict] = field(default_factory=dict)        # login -> user (with password)
    apps: dict[str, dict] = field(default_factory=dict)         # client_id -> {secret, owner}
    projects: dict[str, dict] = field(default_factory=dict)
    workflows: dict[str, dict] = field(default_factory=dict)
    subject_sets: dict[str, dict] = field(default_factory=dict)
    subjects: dict[str, dict] = field(default_factory=dict)
    set_member_subjects: dict[str, dict] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)       # blob key -> stored bytes
    upload_keys: dict[str, str] = field(default_factory=dict)   # blob key -> signature allowed to PUT it
    requests: list[dict] = field(default_factory=list)
    export_data: dict[str, bytes] = field(default_factory=dict)     # "workflows/5678/classifications" -> CSV
    export_media: dict[str, dict] = field(default_factory=dict)     # same key -> the export's medium
    export_pending: dict[str, bytes] = field(default_factory=dict)  # CSV published when the export is ready
    export_delay: float = 0.0                                       # seconds from generate to "ready"
    retirements: dict[str, dict[str, dict]] = field(default_factory=dict)  # workflow -> subject -> reason, time
    faults: list[Fault] = field(default_factory=list)
    sessions: dict[str, dict] = field(default_factory=dict)
    tokens: dict[str, dict] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    next_id: int = 1001
    token_lifetime: int = 7200
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- helpers for tests -------------------------------------------------------------------------
    def add_fault(self, method: str = "*", path: str = ".*", nth: int = 1, **kwargs) -> Fault:
        fault = Fault(method=method, path=path, nth=nth, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def requests_to(self, method: str | None = None, path: str = ".*") -> list[dict]:
        """Logged requests with ``method`` (any if None) whose path matches the regex ``path``."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r["method"] == method.upper()) and re.search(path, r["path"])]

    def subject_ids_in_set(self, set_id: str | int) -> list[str]:
        with self.lock:
            return [m["links"]["subject"] for m in self.set_member_subjects.values()
                    if m["links"]["subject_set"] == str(set_id)]

    def members(self, set_id: str | int) -> list[dict]:
        with self.lock:
            return [m for m in self.set_member_subjects.values() if m["links"]["subject_set"] == str(set_id)]

    def media(self, subject_id: str | int) -> list[bytes | None]:
        """The stored bytes of each location of a subject (None where nothing was PUT)."""
        with self.lock:
            subject = self.subjects[str(subject_id)]
            return [self.blobs.get(loc.get("key", "")) for loc in subject["locations"]]

    def sets_named(self, name: str) -> list[dict]:
        with self.lock:
            return [s for s in self.subject_sets.values() if s["display_name"] == name]

    def retired(self, workflow_id: str | int) -> dict[str, str]:
        """subject id -> retirement reason, for the subjects retired in a workflow."""
        with self.lock:
            return {sid: r["reason"] for sid, r in self.retirements.get(str(workflow_id), {}).items()}

    def new_id(self) -> str:
        with self.lock:
            self.next_id += 1
            return str(self.next_id - 1)

    # -- persistence ---------------------------------------------------------------------------------
    _PERSISTED = ("projects", "workflows", "subject_sets", "subjects", "set_member_subjects", "next_id")
    _OPTIONAL = ("retirements", "export_media")  # absent from states saved before exports existed

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        with self.lock:
            data = {k: getattr(self, k) for k in (*self._PERSISTED, *self._OPTIONAL)}
            data["uploaded"] = {login: u["uploaded_subjects_count"] for login, u in self.users.items()}
            text = json.dumps(data, indent=1, sort_keys=True)
            blob_dir = folder / "blobs"
            blob_dir.mkdir(parents=True, exist_ok=True)
            names = {quote(key, safe=""): key for key in self.blobs}
            on_disk = {p.name for p in blob_dir.iterdir() if not p.name.startswith(".")}
            for name in names.keys() - on_disk:
                write_bytes_atomic(blob_dir / name, self.blobs[names[name]])
            for name in on_disk - names.keys():  # deleted subjects lose their blobs
                (blob_dir / name).unlink()
        write_text_atomic(folder / "state.json", text)

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        path = folder / "state.json"
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            missing = [k for k in self._PERSISTED if k not in data] if isinstance(data, dict) else ["all"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClumptoolError(f"{path}: not a readable fake-panoptes state ({exc}); give another --state "
                                 "folder or delete this one to start empty") from exc
        if missing:
            raise ClumptoolError(f"{path}: not a fake-panoptes state (missing {', '.join(missing)}); give another "
                                 "--state folder or delete this one to start empty")
        with self.lock:
            for key in self._PERSISTED:
                setattr(self, key, data[key])
            for key in self._OPTIONAL:
                if isinstance(data.get(key), dict):
                    setattr(self, key, data[key])
            for login, count in data.get("uploaded", {}).items():
                if login in self.users:
                    self.users[login]["uploaded_subjects_count"] = count
            blob_dir = folder / "blobs"
            if blob_dir.is_dir():
                for blob in blob_dir.iterdir():
                    if not blob.name.startswith("."):
                        self.blobs[unquote(blob.name)] = blob.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature; keep the test output quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        fake: FakePanoptes = self.server.fake
        state = fake.state
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": path, "query": query, "time": time.time(),
                 "auth": "Authorization" in self.headers, "body": _loggable_body(path, self.headers, raw),
                 "range": self.headers.get("Range")}
        fault = None
        with state.lock:
            state.requests.append(entry)
            for f in state.faults:
                if f.matches(self.command, path):
                    f.seen += 1
                    if f.nth <= f.seen < f.nth + f.times:
                        f.fired += 1
                        fault = f
                        break
        fake._append_log(entry)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status == 0 and not fault.drop:
            fault = None  # a pure delay
        if fault is not None and not fault.after and fault.cut_after < 0:
            entry["fault"] = "drop" if fault.drop else fault.status
            return self._fail(fault)
        try:
            status, body, headers = fake.route(self.command, path, query, self.headers, raw)
        except _HTTPError as exc:
            status, body, headers = exc.status, {"errors": [{"message": exc.message}]}, {}
        entry["status"] = status
        if fault is not None and fault.cut_after >= 0:
            entry["fault"] = f"cut after {fault.cut_after} bytes" + (" (truncated)" if fault.truncate else "")
            return self._send(status, body, headers, cut=fault.cut_after, truncate=fault.truncate)
        if fault is not None:
            entry["fault"] = "drop" if fault.drop else fault.status
            return self._fail(fault)
        self._send(status, body, headers)

    def _fail(self, fault: Fault) -> None:
        if fault.drop:
            self.close_connection = True
            return
        self._send(fault.status, {"errors": [{"message": fault.message}]}, {})

    def _send(self, status: int, body, headers: dict, cut: int = -1, truncate: bool = False) -> None:
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        self.send_response(status)
        for key, value in headers.items():
            if isinstance(value, list):
                for v in value:
                    self.send_header(key, v)
            else:
                self.send_header(key, value)
        if cut >= 0 and truncate:
            data = data[:cut]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut >= 0 and not truncate:  # announce the whole body, send part of it, drop the connection
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        if data and self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakePanoptes

    def handle_error(self, request, client_address) -> None:
        """Keep the request's exception on the fake (``server_errors``) instead of printing it.

        socketserver prints a traceback to stderr, and in-process tests capture the CLI's stderr: a client
        hanging up on a dropped download (ConnectionResetError, as the fault injection intends) read as a
        traceback the user saw. A client that hangs up is routine here; anything else stays inspectable."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            self.fake.server_errors.append(f"{client_address}: {exc!r}")


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _loggable_body(path: str, headers, raw: bytes):
    """The request body as logged: JSON or form decoded, secrets replaced by '***', media as a size."""
    if not raw:
        return None
    ctype = headers.get("Content-Type", "")
    if path.startswith("/blob/"):
        return {"bytes": len(raw), "content_type": ctype}
    try:
        if "json" in ctype:
            body = json.loads(raw)
            if path == "/users/sign_in" and isinstance(body.get("user"), dict) and "password" in body["user"]:
                body["user"]["password"] = "***"
            return body
        if "form" in ctype:
            form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
            for key in ("client_secret", "password"):
                if key in form:
                    form[key] = "***"
            return form
    except (ValueError, UnicodeDecodeError):
        pass
    return {"bytes": len(raw), "content_type": ctype}


def _etag(obj) -> str:
    return 'W/"' + hashlib.md5(json.dumps(obj, sort_keys=True).encode()).hexdigest() + '"'


class FakePanoptes:
    """The fake server. ``with FakePanoptes() as fake: ... fake.url ... fake.state``.

    ``users`` maps login -> password, ``apps`` maps OAuth client_id -> client_secret (tokens act as the
    first user), ``projects`` maps project id -> workflow ids. ``subject_limit`` is every user's quota.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_dir: Path | None = None,
                 users: dict[str, str] | None = None, apps: dict[str, str] | None = None,
                 projects: dict[int, tuple[int, ...]] | None = None, subject_limit: int = 10_000,
                 token_lifetime: int = 7200):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake Panoptes server only listens on loopback")
        self.host, self.port = host, port
        self.state_dir = Path(state_dir) if state_dir else None
        self.state = FakeState(token_lifetime=token_lifetime)
        users = DEFAULT_USERS if users is None else users
        for i, (login, password) in enumerate(users.items()):
            self.state.users[login] = {"id": str(42 + i), "login": login, "display_name": login,
                                       "password": password, "subject_limit": subject_limit,
                                       "uploaded_subjects_count": 0}
        owner = next(iter(self.state.users), None)
        for client_id, secret in (DEFAULT_APPS if apps is None else apps).items():
            self.state.apps[client_id] = {"secret": secret, "owner": owner}
        for pid, wids in (DEFAULT_PROJECTS if projects is None else projects).items():
            self.state.projects[str(pid)] = {"id": str(pid), "display_name": f"Fake project {pid}",
                                             "slug": f"clumpbot/fake-{pid}", "configuration": {},
                                             "links": {"workflows": [str(w) for w in wids], "subject_sets": []}}
            for wid in wids:
                self.state.workflows[str(wid)] = {"id": str(wid), "display_name": f"Workflow {wid}",
                                                  "configuration": {}, "retirement": {}, "tasks": {},
                                                  "prioritized": False,
                                                  "links": {"project": str(pid), "subject_sets": []}}
        if self.state_dir:
            self.state.load(self.state_dir)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self.server_errors: list[str] = []  # exceptions while handling a request (not client hang-ups)

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _bind(self) -> None:
        try:
            self._server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise ClumptoolError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._server.fake = self

    def start(self) -> FakePanoptes:
        """Serve in a daemon thread (returns at once)."""
        self._bind()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-panoptes", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, ready=None) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM (for ``clumptool fake-panoptes``; a background
        job of a non-interactive shell ignores SIGINT, so SIGTERM also stops it cleanly)."""
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        self._bind()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, interrupt) if main else None
        if ready:
            ready(self.url)
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakePanoptes:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _append_log(self, entry: dict) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._log_lock, open(self.state_dir / "requests.jsonl", "a") as fh:
            fh.write(json.dumps({k: v for k, v in entry.items()}, default=str) + "\n")

    def _persist(self) -> None:
        if self.state_dir is not None:
            self.state.save(self.state_dir)

    # -- rendering -----------------------------------------------------------------------------------
    def _blob_url(self, key: str, signature: str | None = None) -> str:
        url = f"{self.url}/blob/{key}"
        return f"{url}?{urlencode({'sig': signature})}" if signature else url

    def _render_subject(self, subject: dict, signatures: dict[str, str] | None = None) -> dict:
        out = json.loads(json.dumps(subject))
        out["locations"] = [{loc["type"]: loc["url"] if "url" in loc
                             else self._blob_url(loc["key"], (signatures or {}).get(loc["key"]))}
                            for loc in subject["locations"]]
        return out

    def _render(self, kind: str, obj: dict) -> dict:
        if kind == "subjects":
            return self._render_subject(obj)
        if kind == "users":
            return {k: v for k, v in obj.items() if k != "password"} | {"max_subjects": obj["subject_limit"]}
        return obj

    # -- auth ----------------------------------------------------------------------------------------
    def _session(self, headers) -> tuple[str | None, dict | None]:
        cookie = http.cookies.SimpleCookie(headers.get("Cookie", ""))
        sid = cookie["_Panoptes_session"].value if "_Panoptes_session" in cookie else None
        return sid, self.state.sessions.get(sid) if sid else None

    def _user_from_token(self, headers) -> dict | None:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = self.state.tokens.get(auth[7:])
        if token is None or token["expires"] < time.time():
            return None
        return self.state.users.get(token["user"])

    def _issue_token(self, login: str) -> dict:
        token, refresh = "tok-" + secrets.token_hex(8), "r-" + secrets.token_hex(8)
        self.state.tokens[token] = {"user": login, "expires": time.time() + self.state.token_lifetime}
        self.state.refresh_tokens[refresh] = login
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.state.token_lifetime,
                "refresh_token": refresh, "scope": "public user project group collection classification "
                "subject medium organization translation", "created_at": int(time.time())}

    def _sign_in(self, method: str, headers, raw: bytes):
        state = self.state
        if method == "GET":
            sid, session = self._session(headers)
            if session is None:
                sid = secrets.token_hex(12)
                session = state.sessions[sid] = {"csrf": secrets.token_urlsafe(16), "user": None}
            cookie = f"_Panoptes_session={sid}; path=/; HttpOnly"
            return 200, {"login": "/users/sign_in"}, {"X-CSRF-Param": "authenticity_token",
                                                      "X-CSRF-Token": session["csrf"], "Set-Cookie": cookie}
        sid, session = self._session(headers)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"error": "Bad request"}, {}
        if session is None or body.get("authenticity_token") != session["csrf"]:
            return 422, {"error": "Can't verify CSRF token authenticity."}, {}
        user = body.get("user") or {}
        known = state.users.get(user.get("login"))
        if known is None or known["password"] != user.get("password"):
            return 401, {"error": "Invalid login or password."}, {}
        session["user"] = known["login"]
        return 200, {"users": [self._render("users", known)]}, {
            "Set-Cookie": f"_Panoptes_session={sid}; path=/; HttpOnly"}

    def _oauth_token(self, headers, raw: bytes):
        state = self.state
        form = {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        grant = form.get("grant_type")
        bad = 401, {"errors": [{"message": "invalid_grant"}]}, {}
        if grant == "password":
            _, session = self._session(headers)
            if session is None or session["user"] is None:
                return bad
            return 200, self._issue_token(session["user"]), {}
        if grant == "client_credentials":
            app = state.apps.get(form.get("client_id", ""))
            if app is None or app["secret"] != form.get("client_secret") or app["owner"] is None:
                return 401, {"errors": [{"message": "invalid_client"}]}, {}
            return 200, self._issue_token(app["owner"]), {}
        if grant == "refresh_token":
            login = state.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if login is None:
                return bad
            return 200, self._issue_token(login), {}
        return 400, {"errors": [{"message": "unsupported_grant_type"}]}, {}

    # -- routing -------------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict, headers, raw: bytes):
        with self.state.lock:
            self._ripen_exports()
            if path == "/users/sign_in" and method in ("GET", "POST"):
                return self._sign_in(method, headers, raw)
            if path == "/oauth/token" and method == "POST":
                return self._oauth_token(headers, raw)
            if path.startswith("/blob/"):
                return self._blob(method, path[len("/blob/"):], query, headers, raw)
            if path.startswith("/api/"):
                result = self._api(method, path[len("/api"):], query, headers, raw)
                if method != "GET":
                    self._persist()
                return result
        raise _HTTPError(404, f"No route matches {method} {path}")

    def _blob(self, method: str, key: str, query: dict, headers, raw: bytes):
        state = self.state
        if method == "PUT":
            if state.upload_keys.get(key) is None or state.upload_keys[key] != query.get("sig"):
                return 403, b"AuthenticationFailed: signature not valid for this blob", {}
            if headers.get("x-ms-blob-type") != "BlockBlob":
                return 400, b"MissingRequiredHeader: x-ms-blob-type", {}
            state.blobs[key] = raw
            self._persist()
            return 201, None, {}
        if method in ("GET", "HEAD"):
            if key not in state.blobs:
                return 404, b"BlobNotFound", {}
            mime = "text/csv" if key.startswith(EXPORT_PREFIX) else next(
                (loc["type"] for subject in state.subjects.values() for loc in subject["locations"]
                 if loc.get("key") == key), "application/octet-stream")
            return _ranged(state.blobs[key], headers.get("Range"), {"Content-Type": mime, "Accept-Ranges": "bytes"})
        return 405, b"Method not allowed", {}

    def _api(self, method: str, path: str, query: dict, headers, raw: bytes):
        if API_ACCEPT not in headers.get("Accept", ""):
            raise _HTTPError(404, "Not found (missing Accept: application/vnd.api+json; version=1)")
        user = self._user_from_token(headers)
        if method != "GET" and user is None:
            raise _HTTPError(401, "You must be logged in to access this resource.")
        body = None
        if method in ("POST", "PUT"):
            if "application/json" not in headers.get("Content-Type", ""):
                raise _HTTPError(415, "Unsupported media type")
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise _HTTPError(400, f"Malformed JSON: {exc}") from exc
        seg = [s for s in path.split("/") if s]
        if not seg:
            raise _HTTPError(404, "Not found")
        kind = seg[0]
        if kind == "me" and method == "GET":
            if user is None:
                raise _HTTPError(401, "You must be logged in to access this resource.")
            return self._one("users", user)
        if kind == "users" and method == "GET":
            found = [u for u in self.state.users.values() if len(seg) < 2 or u["id"] == seg[1]]
            return self._list("users", found, query, single=len(seg) > 1)
        store = {"projects": self.state.projects, "workflows": self.state.workflows,
                 "subject_sets": self.state.subject_sets, "subjects": self.state.subjects,
                 "set_member_subjects": self.state.set_member_subjects}.get(kind)
        if store is None:
            raise _HTTPError(404, f"No route matches {method} /api{path}")
        if len(seg) >= 3 and seg[2] == "links":
            return self._links(method, kind, seg, body)
        if len(seg) == 3 and kind in ("projects", "workflows") and seg[2].endswith("_export"):
            return self._export(method, kind, seg[1], seg[2][: -len("_export")], body, user)
        if len(seg) == 3 and kind == "workflows" and seg[2] == "retired_subjects" and method == "POST":
            return self._retire(seg[1], body)
        if method == "GET":
            items = list(store.values())
            if len(seg) > 1:
                items = [store[i] for i in seg[1].split(",") if i in store]
                if not items:
                    raise _HTTPError(404, f"Could not find {kind} with id='{seg[1]}'")
            return self._list(kind, self._filter(kind, items, query), query, single=len(seg) > 1)
        if method == "POST" and len(seg) == 1 and kind in ("subject_sets", "subjects"):
            return self._create(kind, body, user)
        if method == "PUT" and len(seg) == 2 and kind in ("subject_sets", "subjects") and seg[1] in store:
            self._check_etag(kind, store[seg[1]], headers)
            attrs = (body or {}).get(kind) or {}
            for key in ("display_name", "metadata"):
                if key in attrs:
                    store[seg[1]][key] = attrs[key]
            return self._one(kind, store[seg[1]])
        if method == "DELETE" and len(seg) == 2 and kind == "subjects" and seg[1] in store:
            self._check_etag(kind, store[seg[1]], headers)
            self._delete_subject(seg[1])
            return 204, None, {}
        if method in ("PUT", "DELETE") and len(seg) == 2:
            raise _HTTPError(404, f"Could not find {kind} with id='{seg[1]}'")
        raise _HTTPError(404, f"No route matches {method} /api{path}")

    def _check_etag(self, kind: str, obj: dict, headers) -> None:
        given = headers.get("If-Match")
        if given is not None and given != _etag(self._render(kind, obj)):
            raise _HTTPError(412, "Precondition failed: the object changed (stale If-Match)")

    def _one(self, kind: str, obj: dict, status: int = 200):
        rendered = self._render(kind, obj)
        return status, {kind: [rendered], "links": {}, "meta": {}}, {"ETag": _etag(rendered)}

    def _filter(self, kind: str, items: list[dict], query: dict) -> list[dict]:
        state = self.state

        def link(obj, name):
            value = obj.get("links", {}).get(name)
            return value if isinstance(value, list) else [value]

        for key, value in query.items():
            if key in ("page", "page_size", "admin", "sort", "include"):
                continue
            if key == "id":
                wanted = set(value.split(","))
                items = [o for o in items if o["id"] in wanted]
            elif key == "display_name":
                items = [o for o in items if o.get("display_name") == value]
            elif key == "project_id" and kind in ("subject_sets", "subjects", "workflows"):
                items = [o for o in items if o["links"].get("project") == value]
            elif key == "subject_set_id" and kind == "subjects":
                members = set(state.subject_ids_in_set(value))
                items = [o for o in items if o["id"] in members]
            elif key == "subject_set_id" and kind == "set_member_subjects":
                items = [o for o in items if o["links"]["subject_set"] == value]
            elif key == "subject_id" and kind == "set_member_subjects":
                items = [o for o in items if o["links"]["subject"] == value]
            elif key == "workflow_id" and kind == "subject_sets":
                items = [o for o in items if value in link(o, "workflows")]
            else:
                raise _HTTPError(422, f"Unsupported filter {key!r} on {kind}")
        return sorted(items, key=lambda o: int(o["id"]))

    def _list(self, kind: str, items: list[dict], query: dict, single: bool = False):
        if single:
            return self._one(kind, items[0]) if len(items) == 1 else self._page(kind, items, query)
        return self._page(kind, items, query)

    def _page(self, kind: str, items: list[dict], query: dict):
        try:
            page = max(1, int(query.get("page", 1)))
            size = min(100, max(1, int(query.get("page_size", 20))))
        except ValueError as exc:
            raise _HTTPError(422, f"page and page_size must be integers: {exc}") from exc
        count = len(items)
        pages = max(1, -(-count // size))
        chunk = [self._render(kind, o) for o in items[(page - 1) * size: page * size]]
        rest = {k: v for k, v in query.items() if k != "page"}
        next_href = f"/{kind}?{urlencode({'page': page + 1, **rest})}" if page < pages else None
        prev_href = f"/{kind}?{urlencode({'page': page - 1, **rest})}" if page > 1 else None
        meta = {kind: {"page": page, "page_size": size, "count": count, "page_count": pages,
                       "next_page": page + 1 if next_href else None,
                       "previous_page": page - 1 if prev_href else None,
                       "next_href": next_href, "previous_href": prev_href, "first_href": f"/{kind}",
                       "last_href": f"/{kind}?page={pages}"}}
        body = {kind: chunk, "links": {}, "meta": meta}
        return 200, body, {"ETag": _etag(body)}

    def _create(self, kind: str, body: dict | None, user: dict):
        state = self.state
        attrs = (body or {}).get(kind)
        if not isinstance(attrs, dict):
            raise _HTTPError(422, f"Request body must hold a {kind!r} object")
        project = str((attrs.get("links") or {}).get("project") or "")
        if project not in state.projects:
            raise _HTTPError(422, "project must exist" if project else "links.project is required")
        metadata = attrs.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise _HTTPError(422, "metadata must be an object")
        if kind == "subject_sets":
            if not attrs.get("display_name"):
                raise _HTTPError(422, "display_name can't be blank")
            obj = {"id": state.new_id(), "display_name": attrs["display_name"], "metadata": metadata,
                   "set_member_subjects_count": 0, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "links": {"project": project, "workflows": []}}
            state.subject_sets[obj["id"]] = obj
            state.projects[project]["links"]["subject_sets"].append(obj["id"])
            return self._one(kind, obj, status=201)
        # subjects
        if user["uploaded_subjects_count"] >= user["subject_limit"]:
            raise _HTTPError(403, f"User has uploaded {user['uploaded_subjects_count']} subjects of "
                                  f"{user['subject_limit']} maximum")
        locations = attrs.get("locations") or []
        if not isinstance(locations, list) or not locations:
            raise _HTTPError(422, "locations must be a non-empty list")
        sid = state.new_id()
        stored, signatures = [], {}
        for i, loc in enumerate(locations):
            if isinstance(loc, dict) and len(loc) == 1:  # remote media: kept as given, nothing to upload
                (mime, url), = loc.items()
                stored.append({"type": mime, "url": url})
                continue
            if loc not in ALLOWED_MEDIA:
                raise _HTTPError(422, f"Location type {loc!r} is not allowed")
            ext = loc.split("/")[-1].replace("svg+xml", "svg").replace("jpeg", "jpg")
            key = f"subject_location/{sid}-{i}-{secrets.token_hex(4)}.{ext}"
            signatures[key] = "fake-" + secrets.token_hex(6)
            state.upload_keys[key] = signatures[key]
            stored.append({"type": loc, "key": key})
        obj = {"id": sid, "metadata": metadata, "locations": stored, "zooniverse_id": None,
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "links": {"project": project, "collections": [], "subject_sets": []}}
        state.subjects[sid] = obj
        user["uploaded_subjects_count"] += 1  # Panoptes counts every create, deleted ones included
        rendered = self._render_subject(obj, signatures)
        return 201, {kind: [rendered], "links": {}, "meta": {}}, {"ETag": _etag(self._render(kind, obj))}

    # -- data exports and retirement ------------------------------------------------------------------------
    def add_linked_subjects(self, n: int, workflow_id: int | str = 5678, name: str = "fixture set",
                            subject_ids: list[int | str] | None = None) -> list[str]:
        """``n`` subjects (remote media, no upload) in a new subject set linked to ``workflow_id``; their ids.

        ``subject_ids``: give the subjects these ids (``n`` is then their number), e.g. the ids of a simulated
        project's export, as if its galaxies had been uploaded to this server earlier."""
        state = self.state
        given = [str(int(i)) for i in subject_ids] if subject_ids is not None else None
        if given is not None:
            n = len(given)
        with state.lock:
            if given is not None:
                taken = [i for i in given if i in state.subjects]
                if taken or len(set(given)) != n:
                    raise ValueError(f"subject ids already used: {(taken or given)[:5]}")
                state.next_id = max([state.next_id, *(int(i) + 1 for i in given)])
            workflow = state.workflows[str(workflow_id)]
            project = workflow["links"]["project"]
            set_id = state.new_id()
            state.subject_sets[set_id] = {"id": set_id, "display_name": name, "metadata": {},
                                          "set_member_subjects_count": n, "created_at": "2020-01-01T00:00:00Z",
                                          "links": {"project": project, "workflows": [str(workflow_id)]}}
            state.projects[project]["links"]["subject_sets"].append(set_id)
            workflow["links"]["subject_sets"].append(set_id)
            ids = []
            for j in range(n):
                sid = given[j] if given is not None else state.new_id()
                state.subjects[sid] = {"id": sid, "metadata": {}, "zooniverse_id": None,
                                       "locations": [{"type": "image/png", "url": f"https://example.org/{sid}.png"}],
                                       "created_at": "2020-01-01T00:00:00Z",
                                       "links": {"project": project, "collections": [], "subject_sets": [set_id]}}
                mid = state.new_id()
                state.set_member_subjects[mid] = {"id": mid, "priority": None, "linked_at": time.time(),
                                                  "links": {"subject": sid, "subject_set": set_id}}
                ids.append(sid)
            self._persist()
        return ids

    def serve_classification_export(self, workflow_id: int | str, data: bytes,
                                    name: str = "exported galaxies") -> list[str]:
        """Publish ``data`` as the workflow's classification export (ready now) and put the export's subjects
        that the server lacks into the workflow (a new linked subject set, with the export's ids), as if
        volunteers had classified them here: ``fetch-export`` downloads it and ``retire`` can retire them.
        Returns the subject ids added; ValueError if ``data`` is not a CSV with a ``subject_ids`` column."""
        try:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
            if "subject_ids" not in (reader.fieldnames or []):
                raise ValueError("no subject_ids column: not a Zooniverse classification export")
            ids = list(dict.fromkeys(part for row in reader for part in re.split(r"[;,\s]+", row["subject_ids"] or "")
                                     if part.isdigit()))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"not a readable CSV ({exc})") from exc
        with self.state.lock:
            if str(workflow_id) not in self.state.workflows:
                raise ValueError(f"workflow {workflow_id} is not one this server knows")
            new = [i for i in ids if i not in self.state.subjects]
        if new:
            self.add_linked_subjects(len(new), workflow_id, name, subject_ids=new)
        self.publish_export("workflows", workflow_id, "classifications", data)
        self._persist()
        return new

    def set_export(self, kind: str, resource_id: int | str, export_type: str, data: bytes) -> None:
        """What the next generated ``export_type`` export of ``kind``/``resource_id`` will contain."""
        with self.state.lock:
            self.state.export_data[f"{kind}/{resource_id}/{export_type}"] = bytes(data)

    def publish_export(self, kind: str, resource_id: int | str, export_type: str, data: bytes) -> None:
        """An export that is ready now with ``data`` (as if generated earlier), without a request."""
        with self.state.lock:
            key = f"{kind}/{resource_id}/{export_type}"
            self.state.export_data[key] = bytes(data)
            self._new_medium(key, kind, str(resource_id), export_type, None, delay=0.0)
            self._ripen_exports()

    def _new_medium(self, key: str, kind: str, rid: str, export_type: str, user: dict | None, delay: float) -> dict:
        state = self.state
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ")
        medium = state.export_media.get(key) or {
            "id": state.new_id(), "blob": f"{EXPORT_PREFIX}{kind}-{rid}-{export_type}.csv", "created_at": now,
            "kind": kind, "resource_id": rid, "export_type": export_type}
        medium.update({"updated_at": now, "ready_at": time.time() + delay, "state": "creating",
                       "recipients": [int(user["id"])] if user else []})
        state.export_media[key] = medium
        data = state.export_data.get(key)
        if data is None and kind == "projects" and export_type == "subjects":
            data = self._subjects_export(rid)  # as Zooniverse does: from the subjects the server holds now
        state.export_pending[key] = data if data is not None else _EMPTY_EXPORTS.get(export_type, b"")
        return medium

    def _subjects_export(self, project_id: str) -> bytes:
        """The project's subjects export as Zooniverse writes it: one row per subject and workflow its subject
        sets are linked to, with the workflow's retirement of it (``retired_at``, ``retirement_reason``)."""
        state = self.state
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_EMPTY_EXPORTS["subjects"].decode().strip().split(","))
        workflows = [w for w in state.workflows.values() if w["links"].get("project") == project_id]
        for sid in sorted(state.subjects, key=int):
            subject = state.subjects[sid]
            if subject["links"].get("project") != project_id:
                continue
            rendered = self._render_subject(subject)
            locations = {str(i): next(iter(loc.values())) for i, loc in enumerate(rendered["locations"])}
            for set_id in subject["links"]["subject_sets"]:
                for wf in [w for w in workflows if set_id in w["links"]["subject_sets"]]:
                    retired = state.retirements.get(wf["id"], {}).get(sid)
                    created = _export_time(subject["created_at"])
                    writer.writerow([sid, project_id, wf["id"], set_id, json.dumps(subject["metadata"]),
                                     json.dumps(locations), 0, _export_time(retired["retired_at"]) if retired else "",
                                     retired["reason"] if retired else "", created, created])
        return out.getvalue().encode()

    def _ripen_exports(self) -> None:
        state = self.state
        for key, medium in state.export_media.items():
            if medium["state"] == "creating" and time.time() >= medium["ready_at"]:
                state.blobs[medium["blob"]] = state.export_pending.pop(key, b"")
                medium["state"] = "ready"

    def _render_medium(self, medium: dict) -> dict:
        kind, rid, export_type = medium["kind"], medium["resource_id"], medium["export_type"]
        return {"id": medium["id"], "href": f"/{kind}/{rid}/{export_type}_export",
                "src": self._blob_url(medium["blob"], "fake-" + hashlib.md5(medium["updated_at"].encode()).hexdigest()[:8]),
                "content_type": "text/csv", "media_type": f"{kind[:-1]}_{export_type}_export",
                "external_link": False, "created_at": medium["created_at"], "updated_at": medium["updated_at"],
                "metadata": {"recipients": medium["recipients"], "state": medium["state"]},
                "links": {"linked": {"href": f"/{kind}/{rid}", "id": rid, "type": kind}}}

    def _export(self, method: str, kind: str, rid: str, export_type: str, body: dict | None, user: dict | None):
        state = self.state
        allowed = EXPORT_TYPES[kind]
        if export_type not in allowed:
            raise _HTTPError(404, f"No route matches {method} /api/{kind}/{rid}/{export_type}_export")
        if rid not in getattr(state, kind):
            raise _HTTPError(404, f"Could not find {kind} with id='{rid}'")
        key = f"{kind}/{rid}/{export_type}"
        if method == "POST":
            media = (body or {}).get("media")
            if not isinstance(media, dict) or media.get("content_type") != "text/csv":
                raise _HTTPError(422, "media content_type must be text/csv")
            medium = self._new_medium(key, kind, rid, export_type, user, state.export_delay)
            return 201, {"media": [self._render_medium(medium)], "links": {}, "meta": {}}, {}
        if method == "GET":
            medium = state.export_media.get(key)
            if medium is None:
                raise _HTTPError(404, f"No {export_type}_export exists for {kind[:-1]} #{rid}")
            rendered = self._render_medium(medium)
            return 200, {"media": [rendered], "links": {}, "meta": {}}, {"ETag": _etag(rendered)}
        raise _HTTPError(405, f"{method} not allowed on {export_type}_export")

    def _retire(self, wid: str, body: dict | None):
        state = self.state
        if wid not in state.workflows:
            raise _HTTPError(404, f"Could not find workflows with id='{wid}'")
        body = body or {}
        ids = list(body.get("subject_ids") or []) + ([body["subject_id"]] if body.get("subject_id") else [])
        reason = body.get("retirement_reason")
        reason = "nothing_here" if reason == "blank" else reason
        if reason is not None and reason not in RETIREMENT_REASONS:
            raise _HTTPError(422, "Validation failed: Retirement reason is not included in the list")
        try:
            ids = [str(int(i)) for i in ids]
        except (TypeError, ValueError) as exc:
            raise _HTTPError(422, f"subject_ids must be integers: {exc}") from exc
        linked = set(state.workflows[wid]["links"]["subject_sets"])
        done = state.retirements.setdefault(wid, {})
        for sid in ids:  # the real worker skips subjects outside the workflow without a word
            subject = state.subjects.get(sid)
            if subject is not None and linked & set(subject["links"]["subject_sets"]) and sid not in done:
                done[sid] = {"reason": reason or "other", "retired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return 204, None, {}

    def _delete_subject(self, sid: str) -> None:
        state = self.state
        subject = state.subjects.pop(sid)
        for loc in subject["locations"]:
            state.blobs.pop(loc.get("key", ""), None)
            state.upload_keys.pop(loc.get("key", ""), None)
        for mid in [m for m, sms in state.set_member_subjects.items() if sms["links"]["subject"] == sid]:
            set_id = state.set_member_subjects.pop(mid)["links"]["subject_set"]
            state.subject_sets[set_id]["set_member_subjects_count"] -= 1

    def _links(self, method: str, kind: str, seg: list[str], body: dict | None):
        state = self.state
        parent_id, relation = seg[1], seg[3] if len(seg) > 3 else ""
        pairs = {("subject_sets", "subjects"): state.subjects, ("workflows", "subject_sets"): state.subject_sets}
        targets = pairs.get((kind, relation))
        parents = getattr(state, kind)
        if targets is None:
            raise _HTTPError(404, f"No route matches {method} /api/{'/'.join(seg)}")
        if parent_id not in parents:
            raise _HTTPError(404, f"Could not find {kind} with id='{parent_id}'")
        parent = parents[parent_id]
        if method == "POST":
            if not isinstance(body, dict) or list(body) != [relation]:
                raise _HTTPError(422, f"Link relation {relation} must match body key")
            ids = [str(i) for i in body[relation]]
            missing = [i for i in ids if i not in targets]
            if missing:
                raise _HTTPError(422, f"Could not find {relation} with ids {','.join(missing)}")
            if kind == "subject_sets":
                present = set(state.subject_ids_in_set(parent_id))
                dup = [i for i in ids if i in present]
                if dup or len(set(ids)) != len(ids):
                    raise _HTTPError(422, f"Validation failed: subject {','.join(dup) or ids[0]} "
                                          "is already in the set")
                for i in ids:
                    metadata = state.subjects[i]["metadata"]
                    priority = next((v for k, v in metadata.items() if k.lower() in ("#priority", "priority")),
                                    None)
                    mid = state.new_id()
                    state.set_member_subjects[mid] = {
                        "id": mid, "priority": None if priority is None else float(priority),
                        "linked_at": time.time(), "links": {"subject": i, "subject_set": parent_id}}
                    state.subjects[i]["links"]["subject_sets"].append(parent_id)
                parent["set_member_subjects_count"] += len(ids)
            else:
                linked = parent["links"]["subject_sets"]
                for i in ids:
                    if i not in linked:
                        linked.append(i)
                        state.subject_sets[i]["links"]["workflows"].append(parent_id)
            return self._one(kind, parent)
        if method == "DELETE" and len(seg) == 5:
            ids = seg[4].split(",")
            if kind == "subject_sets":
                for mid in [m for m, sms in state.set_member_subjects.items()
                            if sms["links"]["subject_set"] == parent_id and sms["links"]["subject"] in ids]:
                    sid = state.set_member_subjects.pop(mid)["links"]["subject"]
                    state.subjects[sid]["links"]["subject_sets"].remove(parent_id)
                    parent["set_member_subjects_count"] -= 1
            else:
                parent["links"]["subject_sets"] = [i for i in parent["links"]["subject_sets"] if i not in ids]
            return 204, None, {}
        raise _HTTPError(405, f"{method} not allowed on links")


def _ranged(data: bytes, range_header: str | None, headers: dict):
    """A blob answer honouring ``Range: bytes=START-[END]`` (206 + Content-Range), as Azure blob storage does."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", (range_header or "").strip())
    if match is None:
        return 200, data, headers
    start = int(match.group(1))
    end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
    if start >= len(data) or end < start:
        return 416, b"InvalidRange", {**headers, "Content-Range": f"bytes */{len(data)}"}
    return 206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}


def fault_from_dict(spec: dict) -> Fault:
    """Build a :class:`Fault` from plain JSON (for the demo command line)."""
    allowed = {k for k in asdict(Fault()) if k not in ("seen", "fired")}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"unknown fault fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    return Fault(**spec)


# ---------------------------------------------------------------------------------------------
# building export CSVs for the fake to serve (tests and the demo)
# ---------------------------------------------------------------------------------------------

EXPORT_HEADER = ("classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
                 "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
                 "subject_data", "subject_ids")


def classification_record(classification_id: int, subject_id: int | str, user: str,
                          marks: list[tuple[float, float, int]], workflow_id: int = 5678,
                          size: tuple[int, int] = (400, 400), subject_metadata: dict | None = None,
                          version: str = "3.1", task: str = "T0") -> dict:
    """One row of a classification export as Zooniverse writes it: point marks (x, y, tool) on ``task``,
    the image's natural size in ``metadata`` and the subject's metadata in ``subject_data``."""
    meta = {"source": "api", "session": "s", "classifier_version": "2.0", "user_language": "en",
            "subject_dimensions": [{"clientWidth": 500, "clientHeight": 500, "naturalWidth": size[0],
                                    "naturalHeight": size[1]}]}
    value = [{"x": float(x), "y": float(y), "tool": int(tool), "frame": 0, "details": [],
              "tool_label": "Odd clump" if tool else "Normal clump"} for x, y, tool in marks]
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(1_575_000_000 + int(classification_id)))
    return {"classification_id": int(classification_id), "user_name": user, "user_id": zlib.crc32(user.encode()) % 10**6,
            "user_ip": "ddf0c9028b1ece89e3b1", "workflow_id": workflow_id, "workflow_name": "Clump marking",
            "workflow_version": version, "created_at": created, "gold_standard": "", "expert": "",
            "metadata": json.dumps(meta), "annotations": json.dumps([{"task": task, "value": value}]),
            "subject_data": json.dumps({str(subject_id): {"retired": None, **(subject_metadata or {})}}),
            "subject_ids": str(subject_id)}


def export_csv(records: list[dict], header: tuple[str, ...] = EXPORT_HEADER) -> bytes:
    """The CSV bytes of an export of ``records`` (Zooniverse quotes JSON fields and ends lines with \\n)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode()
