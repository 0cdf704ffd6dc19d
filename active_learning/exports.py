"""``clumptool fetch-export``: download a workflow's Zooniverse data exports, whole or not at all.

Panoptes keeps one export per resource and type as a *medium*: ``POST {projects|workflows}/ID/<type>_export``
starts a new one (``metadata.state`` is ``creating`` until a background job has written it, then ``ready``),
``GET`` the same path describes it, and its ``src`` is a signed URL of the CSV. panoptes-client's
``Exportable`` (``generate_export``, ``wait_export``, ``describe_export``) does the API part; the CSV is then
streamed with ``requests`` into a temporary file, resuming with HTTP Range requests after a dropped
connection, and checked before anything is published:

* the header has the columns of that export (the classification export's 14, ...);
* every record has as many fields as the header and the file ends with a complete record (a download cut
  short, or a truncated file on the server, is refused naming the file and what is missing);
* the records are counted.

The files are published as one output set (``common/outputs.py``): ``classifications.csv`` (and
``subjects.csv``, ``workflows.csv``), the bytes exactly as Zooniverse served them. ``incremental`` instead
appends to the previously fetched ``classifications.csv`` the records whose ``classification_id`` it does not
hold yet, so repeated fetches never duplicate a classification, and says how many were new.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from tqdm import tqdm

from clumptool.active_learning.panoptes_session import (
    DEFAULT_ENDPOINT,
    Session,
    check_endpoint,
    panoptes_session,
)
from clumptool.aggregation.export import REQUIRED_COLUMNS
from clumptool.aggregation.workflows import REQUIRED as WORKFLOW_COLUMNS
from clumptool.common.errors import ClumptoolError
from clumptool.common.outputs import check_output_location, output_set, read_manifest

#: export type -> the columns a file of that type must have (to recognise it).
EXPORT_COLUMNS = {
    "classifications": REQUIRED_COLUMNS,
    "subjects": ("subject_id", "metadata", "locations"),
    "workflows": WORKFLOW_COLUMNS,
}
DEFAULT_WAIT_MINUTES = 60.0  # with --generate: Zooniverse builds big exports in minutes to hours
DOWNLOAD_ATTEMPTS = 6
CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchOptions:
    """What ``clumptool fetch-export`` was asked for (see the module docstring)."""

    workflow_id: int
    project_id: int | None = None
    generate: bool = False
    wait_minutes: float | None = None  # None: DEFAULT_WAIT_MINUTES with generate, else do not wait
    subjects: bool = False
    workflows: bool = False
    incremental: bool = False
    endpoint: str = DEFAULT_ENDPOINT

    @property
    def wait_seconds(self) -> float:
        minutes = self.wait_minutes if self.wait_minutes is not None else (
            DEFAULT_WAIT_MINUTES if self.generate else 0.0)
        return 60.0 * minutes

    def types(self) -> list[str]:
        return ["classifications"] + ["subjects"] * self.subjects + ["workflows"] * self.workflows


@dataclass
class FetchReport:
    """What was fetched: per file its records and bytes, and for an incremental fetch how many were new."""

    out_dir: Path
    files: dict[str, dict] = field(default_factory=dict)
    new_classifications: int | None = None
    previous_classifications: int | None = None

    def format(self) -> str:
        lines = []
        for name, info in self.files.items():
            lines.append(f"{name}: {info['rows']:,} records, {info['bytes']:,} bytes (export of "
                         f"{info['updated_at'] or 'unknown date'})")
        if self.new_classifications is not None:
            lines.append(f"incremental: {self.new_classifications:,} new classifications added to the "
                         f"{self.previous_classifications:,} already fetched")
        lines.append(f"-> {self.out_dir}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# checking and merging CSV files (pure file work, no network)
# ---------------------------------------------------------------------------------------------


DOWNLOAD_FIX = ("the download was cut short or the server's file is truncated, so nothing was published. Run the "
                "same command again; if it persists, ask Zooniverse for a fresh export with --generate")


def verify_export(path: Path, export_type: str, name: str | None = None, fix: str = DOWNLOAD_FIX) -> int:
    """Number of records in a downloaded export after checking it is whole (else ClumptoolError naming
    ``name``, default the path, and saying ``fix``).

    The header must hold the columns of ``export_type``; every record must have the header's number of fields
    and the file must end with a line end after a complete record.
    """
    required = EXPORT_COLUMNS[export_type]
    shown_name = name or str(path)

    def _cut_short(where: str, what: str) -> ClumptoolError:
        return ClumptoolError(f"{where}: the export is incomplete: {what}; {fix}")
    with open(path, "rb") as fh:
        head = fh.read(200)
        size = fh.seek(0, 2)
        if size:
            fh.seek(size - 1)
        last = fh.read(1)
    if size == 0:
        raise _cut_short(shown_name, "the file is empty (0 bytes)")
    rows = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, [])
            missing = [c for c in required if c not in header]
            if missing:
                shown = head.decode("utf-8", errors="replace").splitlines()[0][:120] if head else ""
                raise ClumptoolError(f"{shown_name}: not a Zooniverse {export_type} export: missing column(s) "
                                     f"{', '.join(missing)} (it starts {shown!r}); check --endpoint, or ask for a "
                                     "fresh export with --generate")
            for row in reader:
                rows += 1
                if len(row) != len(header):
                    first = f" ({header[0]} {row[0]})" if row and header else ""
                    raise _cut_short(shown_name, f"record {rows}{first} (line {reader.line_num}) has {len(row)} of "
                                           f"{len(header)} fields")
    except csv.Error:
        raise _cut_short(shown_name, f"record {rows + 1} ends inside a quoted field (the file stops in the middle "
                               "of it)") from None
    except UnicodeDecodeError as exc:
        raise ClumptoolError(f"{shown_name}: not UTF-8 text at byte {exc.start} (record {rows + 1}); run the same "
                             "command again, or ask for a fresh export with --generate") from None
    if last != b"\n":
        raise _cut_short(shown_name, f"the last record (record {rows}) has no line end, so it may be cut in its last "
                               "field")
    return rows


def iter_records(path: Path) -> Iterator[bytes]:
    """The raw records of a CSV file, header first, each with its line end (a quoted field may span lines)."""
    with open(path, "rb") as fh:
        parts: list[bytes] = []
        quotes = 0
        for line in fh:
            parts.append(line)
            quotes += line.count(b'"')
            if quotes % 2 == 0:
                yield b"".join(parts)
                parts, quotes = [], 0
        if parts:
            yield b"".join(parts)


def _record_id(record: bytes, column: int) -> str:
    if column == 0:
        cut = record.find(b",")
        value = record[:cut] if cut >= 0 else record
        if b'"' not in value:
            return value.strip().decode()
    return next(csv.reader([record.decode("utf-8")]))[column].strip()


def merge_classifications(old: Path, new: Path, target: Path) -> tuple[int, int]:
    """Write ``target``: the records of ``old`` as they are, then those of ``new`` whose classification_id
    ``old`` lacks. Returns (records in old, records added). Both files must have the same header."""
    old_records, new_records = iter_records(old), iter_records(new)
    old_header, new_header = next(old_records, b""), next(new_records, b"")
    if old_header.strip() != new_header.strip():
        raise ClumptoolError(f"--incremental: the new export's columns differ from those of {old} (Zooniverse "
                             "changed the export format); fetch once without --incremental to replace it")
    column = next(csv.reader([old_header.decode("utf-8-sig")])).index("classification_id")
    seen: set[str] = set()
    with open(target, "wb") as out:
        out.write(old_header)
        for record in old_records:
            seen.add(_record_id(record, column))
            out.write(record)
        n_old = len(seen)
        added = 0
        for record in new_records:
            cid = _record_id(record, column)
            if cid not in seen:
                seen.add(cid)
                out.write(record)
                added += 1
    return n_old, added


# ---------------------------------------------------------------------------------------------
# the download
# ---------------------------------------------------------------------------------------------


def public_url(url: str) -> str:
    """``url`` without its query (a signed URL's signature is a credential: never print or store it)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _total(response: requests.Response) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _starts_at(response: requests.Response, offset: int) -> bool:
    """Does a 206 answer continue exactly at ``offset`` (``Content-Range: bytes OFFSET-...``)?"""
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def download(url: str, target: Path, name: str, progress: bool = True, attempts: int = DOWNLOAD_ATTEMPTS,
             pause: Callable[[float], None] = time.sleep) -> int:
    """Stream ``url`` into ``target``; after a dropped connection continue where it stopped (HTTP Range) up
    to ``attempts`` times. Returns the bytes written; ClumptoolError when it never completes.

    A file served compressed (``Content-Encoding``) is decoded as panoptes-client's own reader does; its
    offsets are those of the compressed bytes, so such a download restarts instead of resuming.
    """
    have, total, error, encoded = 0, None, "", False
    target.write_bytes(b"")
    with tqdm(total=None, desc=f"downloading {name}", unit="B", unit_scale=True, disable=not progress,
              leave=False) as bar:
        for attempt in range(attempts):
            if attempt:
                pause(min(30.0, 0.5 * 2 ** (attempt - 1)))
            if encoded and have:
                have = 0
                target.write_bytes(b"")
                bar.reset()
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
            try:
                with requests.get(url, headers=headers, stream=True, timeout=(30, 300)) as response:
                    if response.status_code == 416 and total is not None and have >= total:
                        return have
                    if response.status_code not in (200, 206):
                        error = f"HTTP {response.status_code}"
                        if response.status_code in (401, 403, 404, 410):
                            break  # the signed URL expired or the file is gone: retrying will not help
                        continue
                    if have and (response.status_code == 200 or not _starts_at(response, have)):
                        have = 0  # no Range support (or another range): start again
                        target.write_bytes(b"")
                        bar.reset()
                        if response.status_code == 206:
                            continue
                    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
                    total = _total(response) if total is None or response.status_code == 200 else total
                    total = None if encoded else total
                    bar.total = total
                    with open(target, "ab") as fh:
                        for chunk in response.iter_content(CHUNK):
                            fh.write(chunk)
                            have += len(chunk)
                            bar.update(len(chunk))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                error = f"connection lost after {have:,} bytes ({type(exc).__name__})"
                continue
            if total is None or have >= total:
                return have
            error = f"connection closed after {have:,} of {total:,} bytes"
    raise ClumptoolError(f"{name}: the download from {public_url(url)} did not complete after {attempts} attempts "
                         f"({error}); nothing was published: check the network and run the same command again")


# ---------------------------------------------------------------------------------------------
# the API part
# ---------------------------------------------------------------------------------------------


def _state(description: dict) -> str:
    medium = (description.get("media") or [{}])[0]
    return str((medium.get("metadata") or {}).get("state", "ready"))  # older exports carry no state: ready


def _export_ready(session: Session, resource, export_type: str, what: str, options: FetchOptions,
                  generated: bool) -> dict:
    """The export's description once it is ready (waiting up to --wait-minutes)."""
    pc = session.pc
    try:
        description = resource.describe_export(export_type)
    except pc.panoptes.PanoptesAPIException as exc:
        if generated:
            raise ClumptoolError(f"the {what} was requested but cannot be read ({session.clean(exc)}); run the "
                                 "same command again without --generate in a few minutes") from exc
        raise ClumptoolError(f"no {what} can be read at {options.endpoint} ({session.clean(exc)}): if none was "
                             "generated yet, add --generate to ask Zooniverse for one (and wait for it)") from exc
    if _state(description) in ("ready", "finished"):
        return description
    seconds = options.wait_seconds
    if seconds <= 0:
        raise ClumptoolError(f"the {what} is still being generated by Zooniverse; add --wait-minutes M to wait for "
                             "it, or run the same command again later")
    try:
        return resource.wait_export(export_type, seconds)
    except pc.panoptes.PanoptesAPIException as exc:
        if "not ready within" in str(exc):
            raise ClumptoolError(
                f"the {what} was still being generated after --wait-minutes {seconds / 60:g}; Zooniverse goes on "
                "building it: run the same command again later WITHOUT --generate (asking again would restart "
                "it), with --wait-minutes to wait longer") from None
        raise ClumptoolError(f"waiting for the {what} failed ({session.clean(exc)}); run the same command again "
                             "without --generate") from exc


def _resources(session: Session, options: FetchOptions) -> dict[str, tuple[object, str]]:
    """export type -> (panoptes object to export from, what it is called in messages)."""
    pc = session.pc
    try:
        workflow = pc.Workflow.find(options.workflow_id)
    except pc.panoptes.PanoptesAPIException as exc:
        raise ClumptoolError(f"--workflow-id {options.workflow_id}: not found or not accessible at "
                             f"{options.endpoint} ({session.clean(exc)}); check the id") from exc
    owner = str((workflow.raw.get("links") or {}).get("project"))
    if options.project_id is not None and owner != str(options.project_id):
        raise ClumptoolError(f"--workflow-id {options.workflow_id} belongs to project {owner}, not --project-id "
                             f"{options.project_id}; give the workflow's own project (or leave --project-id out)")
    found = {"classifications": (workflow, f"classifications export of workflow {options.workflow_id}")}
    if options.subjects or options.workflows:
        try:
            project = pc.Project.find(owner)
        except pc.panoptes.PanoptesAPIException as exc:
            raise ClumptoolError(f"project {owner} (of --workflow-id {options.workflow_id}): not accessible at "
                                 f"{options.endpoint} ({session.clean(exc)}); check that this account is one "
                                 "of its collaborators") from exc
        for kind in ("subjects", "workflows"):
            found[kind] = (project, f"{kind} export of project {owner}")
    return {t: found[t] for t in options.types()}


def fetch_exports(out_dir: str | os.PathLike, options: FetchOptions, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> FetchReport:
    """Download the exports ``options`` asks for into ``out_dir`` as one output set (module docstring)."""
    out = check_output_location(out_dir)
    endpoint = check_endpoint(options.endpoint)
    options = replace(options, endpoint=endpoint)
    if options.wait_minutes is not None and not options.wait_minutes >= 0:
        raise ClumptoolError(f"--wait-minutes {options.wait_minutes}: give 0 or more minutes")
    previous = out / "classifications.csv"
    if options.incremental and previous.is_file():
        earlier = (read_manifest(out) or {}).get("info", {}).get("workflow_id")
        if earlier is not None and str(earlier) != str(options.workflow_id):
            raise ClumptoolError(f"--incremental: {previous} holds the export of workflow {earlier}, not --workflow-id "
                                 f"{options.workflow_id}; give another --out for this workflow")
        verify_export(previous, "classifications", fix=(  # never merge into a broken local file
            "this local file is damaged (nothing was downloaded): fetch again without --incremental to replace it "
            "with the whole export (add --generate for the newest classifications)"))
    report = FetchReport(out_dir=out)
    say = log or (lambda _: None)
    with panoptes_session(endpoint) as session:
        resources = _resources(session, options)
        if options.generate:
            for export_type, (resource, what) in resources.items():
                try:
                    resource.generate_export(export_type)
                except session.pc.panoptes.PanoptesAPIException as exc:
                    raise ClumptoolError(f"asking Zooniverse for a new {what} failed ({session.clean(exc)}); check "
                                         "that this account is a collaborator of the project") from exc
                say(f"asked Zooniverse for a new {what}")
        with output_set(out, "fetch-export") as staged:
            for export_type, (resource, what) in resources.items():
                description = _export_ready(session, resource, export_type, what, options, options.generate)
                medium = description["media"][0]
                name = f"{export_type}.csv"
                part = staged.path / f".{name}.part"
                size = download(medium["src"], part, name, progress)
                rows = verify_export(part, export_type, name)
                if export_type == "classifications" and options.incremental:
                    if previous.is_file():
                        n_old, added = merge_classifications(previous, part, staged.file(name))
                        part.unlink()
                    else:
                        os.replace(part, staged.file(name))
                        n_old, added = 0, rows
                    report.previous_classifications, report.new_classifications = n_old, added
                    rows, size = n_old + added, staged.file(name).stat().st_size
                else:
                    os.replace(part, staged.file(name))
                report.files[name] = {"rows": rows, "bytes": size, "medium_id": medium.get("id"),
                                      "updated_at": medium.get("updated_at"), "src": public_url(medium["src"])}
            staged.info.update({"endpoint": endpoint, "workflow_id": options.workflow_id,
                                "exports": report.files, "incremental": options.incremental,
                                "new_classifications": report.new_classifications})
    return report
