"""Upload a selected batch to Zooniverse with ``panoptes-client``: never twice, never lost.

One subject set per active-learning round (created, or reused by name), one subject per galaxy with its PNG
and hidden metadata (``#galaxy_id``, ``#al_round``, ``#acquisition``, ``#al_score``, ``#priority``, ...),
the subjects linked to the set in batches and the set linked to the workflow.

Every step is recorded in the :class:`~clumptool.active_learning.ledger.Ledger` the moment it happens, so an
interrupted run (network drop, quota 403, Ctrl-C) resumes on the next call:

* the subject id is stored as soon as the create POST answers, before the media PUT;
* a create whose answer never arrived is remembered (``create_pending``); the next run lists the
  project's subjects and adopts (or deletes) one carrying this galaxy's ``#galaxy_id`` and ``#al_round``;
* ``panoptes-client`` swallows failed media uploads, so each PUT's outcome is recorded by a
  :class:`~panoptes_client.Subject` subclass; a subject without its media is deleted and counts as failed;
  on resume a subject left in 'created' is fetched and its stored image compared with the local file;
* before linking, the set's current members are listed, so a link that reached the server but not the
  ledger is not sent again.

The login, credentials and log hygiene are :mod:`clumptool.active_learning.panoptes_session`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import requests
from tqdm import tqdm

from clumptool.active_learning.ledger import Ledger
from clumptool.active_learning.manifest import check_png, subject_metadata
from clumptool.active_learning.options import UploadConfig
from clumptool.active_learning.panoptes_session import clean_message, panoptes_session
from clumptool.common.errors import ClumptoolError
from clumptool.common.ids import normalise_subject_ids

log = logging.getLogger(__name__)

_QUOTA = re.compile(r"uploaded \d+ subjects of \d+ maximum", re.I)
_AUTH = re.compile(r"must be logged in|not authori[sz]ed|invalid_grant|invalid_client", re.I)


@dataclass
class UploadReport:
    """What an upload (or dry run) did; ``ok`` is True only when every galaxy is linked."""

    round_name: str
    subject_set_name: str
    endpoint: str
    dry_run: bool
    requested: int
    subject_set_id: str | None = None
    reused_set: bool = False
    workflow_linked: bool = False
    created: int = 0
    linked_now: int = 0
    linked_total: int = 0
    recovered: int = 0          # subjects found on the server that the ledger had lost track of
    deleted: int = 0            # subjects deleted because their media never arrived (or duplicates)
    would_upload: int = 0       # dry run: galaxies still to upload
    failures: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failures not tied to one galaxy
    stopped_early: str | None = None
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.dry_run or (self.linked_total == self.requested and not self.failures and not self.errors
                                 and self.stopped_early is None))

    def format(self) -> str:
        lines = []
        if self.dry_run:
            lines.append(f"dry run: {self.would_upload} of {self.requested} galaxies would be uploaded to "
                         f"subject set {self.subject_set_name!r} at {self.endpoint} (nothing was sent)")
            return "\n".join(lines)
        where = f"subject set {self.subject_set_name!r} (id {self.subject_set_id or '?'})"
        lines.append(f"{self.linked_total} of {self.requested} galaxies are linked in {where} at {self.endpoint}"
                     f" (this run: {self.created} created, {self.linked_now} linked"
                     + (f", {self.recovered} recovered" if self.recovered else "")
                     + (f", {self.deleted} incomplete deleted" if self.deleted else "") + ")")
        if self.workflow_linked:
            lines.append("the subject set is linked to the workflow")
        if self.stopped_early:
            lines.append(f"stopped early: {self.stopped_early}")
        for gid, err in self.failures[:20]:
            lines.append(f"  failed: galaxy {gid}: {err}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failures (see the ledger)")
        lines.extend(f"  error: {e}" for e in self.errors)
        if not self.ok:
            lines.append("run the same command again to resume: finished galaxies are not uploaded twice")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _prepare(selection: pd.DataFrame, max_bytes: int) -> pd.DataFrame:
    for col in ("galaxy_id", "file"):
        if col not in selection.columns:
            raise ClumptoolError(f"selection has no {col!r} column (write the cutouts first)")
    sel = selection.copy()
    sel["galaxy_id"] = normalise_subject_ids(sel["galaxy_id"], where="selection")
    if sel["galaxy_id"].duplicated().any():
        raise ClumptoolError(f"selection lists galaxy_id {sel.loc[sel['galaxy_id'].duplicated(), 'galaxy_id'].iloc[0]!r}"
                             " twice")
    for i, (gid, file) in enumerate(zip(sel["galaxy_id"], sel["file"], strict=True)):
        check_png(Path(str(file)), f"row {i + 1} (galaxy_id {gid})", max_bytes)
    return sel.reset_index(drop=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the upload
# ---------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Stop the run (quota, authentication, too many failures in a row)."""


def _subject_class(pc):
    """A ``Subject`` that records each media PUT's outcome (the client drops it) and reports its id the
    moment the create POST answers."""

    class TrackedSubject(pc.Subject):
        def __init__(self, raw=None, etag=None):
            self.__dict__["_clumptool_media"] = {}
            self.__dict__["_clumptool_on_id"] = None
            super().__init__({} if raw is None else raw, etag)

        def set_raw(self, raw, etag=None, loaded=True):
            super().set_raw(raw, etag, loaded)
            hook = self.__dict__.get("_clumptool_on_id")
            if hook is not None and raw.get("id"):
                self.__dict__["_clumptool_on_id"] = None
                hook(str(raw["id"]))

        def _upload_media(self, url, media_data, media_type):
            try:
                response = super()._upload_media(url, media_data, media_type)
            except Exception as exc:
                self.__dict__["_clumptool_media"][url] = exc
                raise
            self.__dict__["_clumptool_media"][url] = None
            return response

        def media_error(self, expected: int) -> str | None:
            outcomes = self.__dict__["_clumptool_media"]
            failed = [exc for exc in outcomes.values() if exc is not None]
            if failed:
                return f"media upload failed: {failed[0]}"
            if len(outcomes) < expected:
                return f"media upload failed: {expected - len(outcomes)} of {expected} files were never sent"
            return None

    return TrackedSubject


class _Uploader:
    def __init__(self, pc, selection: pd.DataFrame, ledger: Ledger, round_name: str, config: UploadConfig,
                 report: UploadReport, secrets: list[str], progress: bool):
        self.pc = pc
        self.sel = selection.set_index("galaxy_id", drop=False)
        self.ledger = ledger
        self.round = round_name
        self.config = config
        self.report = report
        self.secrets = secrets
        self.progress = progress
        self.Subject = _subject_class(pc)
        self.set_id: str | None = None
        self.consecutive_failures = 0
        self.link_broken = False

    # -- helpers -----------------------------------------------------------------------------------
    def _clean(self, exc: object) -> str:
        return clean_message(exc, self.secrets)

    def _rows(self) -> pd.DataFrame:
        rows = self.ledger.rows(self.round)
        return rows[rows["galaxy_id"].isin(self.sel.index)].reset_index(drop=True)

    def _fail(self, gid: str, error: str, clear_subject: bool = False) -> None:
        self.ledger.mark(gid, self.round, "failed", error=error, clear_subject=clear_subject)
        self.report.failures.append((gid, error))
        self.consecutive_failures += 1
        if _QUOTA.search(error):
            raise _Stop(f"Zooniverse subject quota reached ({error}); ask the Zooniverse team to raise it, "
                        "then run again")
        if _AUTH.search(error):
            raise _Stop(f"not authorised ({error})")
        if self.consecutive_failures >= self.config.max_consecutive_failures:
            raise _Stop(f"{self.consecutive_failures} failures in a row; the last: {error}")

    def _delete_subject(self, subject_id: str) -> bool:
        try:
            self.pc.Subject(subject_id).delete()
        except self.pc.panoptes.PanoptesAPIException as exc:
            if "could not find" in str(exc).lower():
                return True
            log.warning("could not delete subject %s: %s", subject_id, self._clean(exc))
            return False
        except Exception as exc:  # network
            log.warning("could not delete subject %s: %s", subject_id, self._clean(exc))
            return False
        self.report.deleted += 1
        return True

    # -- steps -----------------------------------------------------------------------------------------
    def check_project(self) -> None:
        pc, cfg = self.pc, self.config
        try:
            pc.Project.find(cfg.project_id)
        except pc.panoptes.PanoptesAPIException as exc:
            raise ClumptoolError(f"--project-id {cfg.project_id}: not found or not accessible at {cfg.endpoint} "
                                 f"({self._clean(exc)}); check the id and that this account may edit it") from exc

    def check_workflow(self) -> None:
        pc, cfg = self.pc, self.config
        if cfg.workflow_id is None:
            return
        try:
            workflow = pc.Workflow.find(cfg.workflow_id)
        except pc.panoptes.PanoptesAPIException as exc:
            raise ClumptoolError(f"--workflow-id {cfg.workflow_id}: not found or not accessible at {cfg.endpoint} "
                                 f"({self._clean(exc)}); check the id, or leave it out to link the subject set "
                                 "by hand") from exc
        owner = str(workflow.raw.get("links", {}).get("project"))
        if owner != str(cfg.project_id):
            raise ClumptoolError(f"--workflow-id {cfg.workflow_id} belongs to project {owner}, not --project-id "
                                 f"{cfg.project_id}; give a workflow of this project")

    def server_galaxies(self) -> dict[str, str]:
        """galaxy id -> round of every subject in the project's clumptool subject sets (those whose metadata
        has ``#clumptool_round``): what earlier rounds put on Zooniverse, whatever the local ledger says."""
        pc, found = self.pc, {}
        for subject_set in pc.SubjectSet.where(project_id=self.config.project_id, page_size=100):
            set_round = (subject_set.raw.get("metadata") or {}).get("#clumptool_round")
            if set_round is None:
                continue
            for s in pc.Subject.where(subject_set_id=subject_set.id, page_size=100):
                meta = s.raw.get("metadata") or {}
                gid = meta.get("#galaxy_id")
                if gid is not None:
                    found.setdefault(str(gid), str(meta.get("#al_round", set_round)))
        return found

    def refuse_reuploads(self, found: dict[str, str]) -> None:
        """Refuse galaxies already on the server from another round (unless ``allow_reupload``)."""
        if self.config.allow_reupload:
            return
        again = [(gid, found[gid]) for gid, row in self.sel.iterrows()
                 if gid in found and found[gid] != self.round and row.get("strategy") != "unfinished"]
        if again:
            raise ClumptoolError(_reupload_message(again, f"on {self.config.endpoint} in project "
                                                         f"{self.config.project_id}"))

    def subject_set(self) -> None:
        pc, cfg = self.pc, self.config
        self.check_project()
        known = self.ledger.round_info(self.round).get("subject_set_id")
        found = None
        if known:
            try:
                candidate = pc.SubjectSet.find(known)
                if (candidate.display_name == cfg.subject_set_name
                        and str(candidate.raw["links"].get("project")) == str(cfg.project_id)):
                    found = candidate
            except pc.panoptes.PanoptesAPIException:
                found = None
        if found is None:
            found = next((s for s in pc.SubjectSet.where(project_id=cfg.project_id,
                                                          display_name=cfg.subject_set_name)
                          if s.display_name == cfg.subject_set_name), None)
        if found is not None:
            self.report.reused_set = True
        else:
            found = pc.SubjectSet()
            found.links.project = cfg.project_id
            found.display_name = cfg.subject_set_name
            found.metadata["#clumptool_round"] = self.round
            if cfg.model_version:
                found.metadata["#model_version"] = cfg.model_version
            found.save()
        self.set_id = str(found.id)
        self.report.subject_set_id = self.set_id
        self.ledger.set_round_info(self.round, subject_set_name=cfg.subject_set_name, subject_set_id=self.set_id,
                                   project_id=cfg.project_id, workflow_id=cfg.workflow_id, endpoint=cfg.endpoint)

    def _set_members(self) -> dict[str, dict]:
        """subject id -> metadata of the subjects currently linked to the set."""
        return {str(s.id): dict(s.raw.get("metadata") or {})
                for s in self.pc.Subject.where(subject_set_id=self.set_id, page_size=100)}

    def _ours(self, metadata: dict) -> str | None:
        gid = metadata.get("#galaxy_id")
        if gid is not None and str(metadata.get("#al_round")) == self.round and str(gid) in self.sel.index:
            return str(gid)
        return None

    def reconcile(self) -> None:
        """Bring the ledger in line with the server before creating anything."""
        rows = self._rows()
        members = self._set_members()
        member_of = {self._ours(meta): sid for sid, meta in members.items() if self._ours(meta)}
        # 1. creates whose answer was lost: look for the subjects on the server
        lost = rows[(rows["create_pending"] == 1) & rows["subject_id"].isna() & (rows["state"] != "linked")]
        if len(lost):
            wanted = set(lost["galaxy_id"])
            log.warning("%d subject create(s) of round %s got no answer; listing project %s's subjects to find "
                        "them (slow on big projects)", len(wanted), self.round, self.config.project_id)
            found: dict[str, list[str]] = {}
            for gid, sid in member_of.items():
                if gid in wanted:
                    found.setdefault(gid, []).append(sid)
            for s in self.pc.Subject.where(project_id=self.config.project_id, page_size=100):
                gid = self._ours(s.raw.get("metadata") or {})
                if gid in wanted and str(s.id) not in found.get(gid, []):
                    found.setdefault(gid, []).append(str(s.id))
            for gid in wanted:
                ids = sorted(found.get(gid, []), key=lambda x: (x not in members, int(x) if x.isdigit() else 0))
                if not ids:
                    self.ledger.end_create(gid, self.round)
                    continue
                keep, extra = ids[0], ids[1:]
                for sid in extra:  # duplicates from earlier retries
                    self._delete_subject(sid)
                self.ledger.mark(gid, self.round, "created", subject_id=keep)
                self.report.recovered += 1
            rows = self._rows()
        # 2. subjects the ledger knows: linked already? media really stored? still exists?
        for row in rows.itertuples(index=False):
            gid, state = row.galaxy_id, row.state
            sid = None if row.subject_id is None or pd.isna(row.subject_id) else str(row.subject_id)
            if sid is None:
                if gid in member_of:  # linked on the server, lost locally
                    self.ledger.mark(gid, self.round, "linked", subject_id=member_of[gid])
                    self.report.recovered += 1
                continue
            if sid in members:
                if state != "linked":
                    self.ledger.mark(gid, self.round, "linked", subject_id=sid)
                continue
            if gid in member_of:  # another subject of this galaxy is in the set: this one is a stray
                if self._delete_subject(sid):
                    self.ledger.mark(gid, self.round, "linked", subject_id=member_of[gid])
                else:
                    self.ledger.mark(gid, self.round, "failed", error=f"stray duplicate subject {sid} could "
                                     "not be deleted yet")
                continue
            # not in the set: check on the server that it exists with its image before linking it
            verdict = self._verify(sid, gid)
            if verdict == "ok":
                self.ledger.mark(gid, self.round, "uploaded", subject_id=sid)
            elif verdict == "missing":
                self.ledger.mark(gid, self.round, "selected", error="subject vanished from the server; "
                                 "uploading again", clear_subject=True)
            elif self._delete_subject(sid):  # exists without (the right) media
                self.ledger.mark(gid, self.round, "selected", error=f"{verdict}; deleted, uploading again",
                                 clear_subject=True)
            else:
                self.ledger.mark(gid, self.round, "failed", error=f"{verdict}; could not delete it yet")

    def _verify(self, subject_id: str, gid: str) -> str:
        """'ok' when the subject exists with our image stored, 'missing', or the reason it is incomplete."""
        try:
            subject = self.pc.Subject.find(subject_id)
        except self.pc.panoptes.PanoptesAPIException as exc:
            if "could not find" in str(exc).lower():
                return "missing"
            raise
        urls = [url for loc in (subject.raw.get("locations") or []) for url in loc.values()]
        if not urls:
            return "subject has no media location"
        try:
            response = requests.get(urls[0], timeout=60)
        except requests.RequestException as exc:
            return f"stored media not readable ({self._clean(exc)})"
        if response.status_code != 200 or not response.content:
            return f"stored media missing (HTTP {response.status_code})"
        local = Path(str(self.sel.loc[gid, "file"]))
        if hashlib.sha256(response.content).hexdigest() != _sha256(local):
            return "stored media differs from the local file"
        return "ok"

    def create(self, gid: str) -> str | None:
        """Create one subject with its image and metadata; return its id when the media is stored."""
        pc, cfg = self.pc, self.config

        row = self.sel.loc[gid]
        metadata = subject_metadata(row, self.round, cfg.metadata_columns)
        if cfg.model_version and "#model_version" not in metadata:
            metadata["#model_version"] = cfg.model_version
        subject = self.Subject()
        subject.links.project = cfg.project_id
        try:
            subject.add_location(str(row["file"]), manual_mimetype="image/png")
        except OSError as exc:
            self._fail(gid, f"cannot read {row['file']}: {exc.strerror or exc}")
            return None
        subject.metadata.update(metadata)
        subject.__dict__["_clumptool_on_id"] = lambda sid: self.ledger.mark(gid, self.round, "created",
                                                                          subject_id=sid)
        self.ledger.begin_create(gid, self.round)
        try:
            subject.save()
        except pc.panoptes.PanoptesAPIException as exc:
            message = self._clean(exc)
            if subject.id is None and "Received HTTP status code" not in message:
                self.ledger.end_create(gid, self.round)  # a clear refusal: nothing was created
            self._fail(gid, message)
            return None
        except requests.RequestException as exc:  # the answer was lost: the subject may exist
            self._fail(gid, f"connection failed while creating the subject: {self._clean(exc)}")
            return None
        sid = str(subject.id)
        error = subject.media_error(expected=1)
        if error is None and cfg.verify_media:
            verdict = self._verify(sid, gid)
            error = None if verdict == "ok" else verdict
        if error is not None:
            deleted = self._delete_subject(sid)
            self._fail(gid, self._clean(error) + ("; subject deleted" if deleted else ""), clear_subject=deleted)
            return None
        self.ledger.mark(gid, self.round, "uploaded", subject_id=sid)
        self.report.created += 1
        self.consecutive_failures = 0
        return sid

    def link(self, pairs: list[tuple[str, str]]) -> None:
        """Link (galaxy, subject) pairs to the set with one POST per batch of plain ids."""
        pc = self.pc
        for start in range(0, len(pairs), self.config.link_batch):
            batch = pairs[start:start + self.config.link_batch]
            try:
                pc.SubjectSet.http_post(f"{self.set_id}/links/subjects",
                                        json={"subjects": [sid for _, sid in batch]}, retry=True)
            except Exception as exc:
                # the server may or may not have linked them: the next run lists the members first
                message = f"linking to subject set {self.set_id} failed: {self._clean(exc)}"
                for gid, _ in batch:
                    self.ledger.mark(gid, self.round, "uploaded", error=message)
                self.report.errors.append(message)
                self.link_broken = True
                raise _Stop(message) from exc
            for gid, sid in batch:
                self.ledger.mark(gid, self.round, "linked", subject_id=sid)
            self.report.linked_now += len(batch)

    def quota(self, needed: int) -> None:
        if not self.config.check_quota or needed == 0:
            return
        try:
            me = self.pc.User.me()
            raw = me.raw if me is not None else {}
        except Exception as exc:  # not fatal: the server still enforces the quota
            log.warning("could not read the subject quota: %s", self._clean(exc))
            return
        limit = raw.get("max_subjects", raw.get("subject_limit"))
        used = raw.get("uploaded_subjects_count")
        if limit is None or used is None:
            return
        if int(used) + needed > int(limit):
            raise ClumptoolError(
                f"Zooniverse subject quota: this account has uploaded {used} of {limit} subjects and this batch "
                f"needs {needed} more; ask the Zooniverse team to raise the limit, or select fewer galaxies")

    def run(self) -> None:
        self.check_project()
        self.refuse_reuploads(self.server_galaxies())
        self.subject_set()
        self.reconcile()
        rows = self._rows()
        to_create = [r.galaxy_id for r in rows.itertuples(index=False)
                     if r.state in ("selected", "failed") and (r.subject_id is None or pd.isna(r.subject_id))]
        to_link = [(r.galaxy_id, r.subject_id) for r in rows.itertuples(index=False) if r.state == "uploaded"]
        self.quota(len(to_create))
        queue: list[tuple[str, str]] = []
        # a leftover Subject.async_saves() pool on this thread would make save() return before the create
        leftover = self.pc.Subject._local.__dict__.pop("save_exec", None)
        try:
            self.link(to_link)
            for gid in tqdm(to_create, desc="uploading subjects", unit="subject", disable=not self.progress,
                            leave=False):
                sid = self.create(gid)
                if sid is not None:
                    queue.append((gid, sid))
                if len(queue) >= self.config.link_batch:
                    self.link(queue)
                    queue = []
            self.link(queue)
            queue = []
        except _Stop as stop:
            self.report.stopped_early = str(stop)
            if queue and not self.link_broken:  # keep what was uploaded before the stop
                with contextlib.suppress(_Stop):
                    self.link(queue)
        finally:
            if leftover is not None:
                self.pc.Subject._local.save_exec = leftover
        self.link_workflow()

    def link_workflow(self) -> None:
        pc, wid = self.pc, self.config.workflow_id
        if wid is None or self.set_id is None:
            return
        try:
            workflow = pc.Workflow.find(wid)
            if str(workflow.raw["links"].get("project")) != str(self.config.project_id):
                raise ClumptoolError(f"workflow {wid} belongs to project {workflow.raw['links'].get('project')}, "
                                     f"not {self.config.project_id}")
            workflow.add_subject_sets([self.set_id])
            self.report.workflow_linked = True
        except pc.panoptes.PanoptesAPIException as exc:
            self.report.errors.append(f"linking subject set {self.set_id} to workflow {wid} failed: "
                                      f"{self._clean(exc)}")
        except ClumptoolError:
            raise
        except Exception as exc:
            self.report.errors.append(f"linking subject set {self.set_id} to workflow {wid} failed: "
                                      f"{self._clean(exc)}")


def _reupload_message(again: list[tuple[str, str]], where_: str) -> str:
    shown = ", ".join(f"{gid} (round {rnd!r})" for gid, rnd in again[:5]) + (", ..." if len(again) > 5 else "")
    return (f"{len(again)} galaxies of this selection were already uploaded by earlier rounds {where_}: "
            f"{shown}; they are left out of new selections automatically; to upload them again on purpose pass "
            "--allow-reupload")


def uploaded_galaxies(config: UploadConfig, needed: int = 0) -> dict[str, str]:
    """Log in and list the galaxies earlier clumptool rounds put in ``config.project_id`` (galaxy id ->
    round). Run before scoring: it checks the endpoint, the credentials, the project, the workflow and that
    the account's subject quota leaves room for ``needed`` more subjects at the same time."""
    report = UploadReport(round_name="", subject_set_name=config.subject_set_name, endpoint=config.endpoint,
                          dry_run=False, requested=0)
    empty = pd.DataFrame({"galaxy_id": pd.Series([], dtype=str)})
    with panoptes_session(config.endpoint, config.admin) as session:
        uploader = _Uploader(session.pc, empty, None, "", config, report, session.secrets, False)
        try:
            uploader.check_project()
            uploader.check_workflow()
            uploader.quota(needed)
            return uploader.server_galaxies()
        except (session.pc.panoptes.PanoptesAPIException, OSError, ValueError, KeyError, TypeError) as exc:
            raise ClumptoolError(f"listing the subjects already in project {config.project_id} at "
                                 f"{config.endpoint} failed ({session.clean(exc)}); check --endpoint and "
                                 "the network, then run again") from None


def upload_selection(selection: pd.DataFrame, ledger: Ledger, round_name: str, config: UploadConfig,
                     progress: bool = True) -> UploadReport:
    """Upload ``selection`` (galaxy_id, file = PNG path, score, strategy, rank, control, metadata columns)
    as round ``round_name``: resumable and idempotent through ``ledger``.

    Raises ClumptoolError for problems a user must fix first (bad files, missing credentials, failed
    login, unknown project, quota too small); per-galaxy failures are in the report (``report.ok``).
    ``config.dry_run`` checks the files and reports what would be uploaded without any request, without
    credentials and without writing to the ledger.
    """
    sel = _prepare(selection, config.max_bytes)
    if not config.allow_reupload:
        earlier = ledger.uploaded_elsewhere(round_name)
        strategy = sel["strategy"] if "strategy" in sel.columns else pd.Series("", index=sel.index)
        again = [(gid, earlier[gid]) for gid, st in zip(sel["galaxy_id"], strategy, strict=True)
                 if gid in earlier and st != "unfinished"]
        if again:
            raise ClumptoolError(_reupload_message(again, f"(ledger {ledger.path})"))
    report = UploadReport(round_name=round_name, subject_set_name=config.subject_set_name,
                          endpoint=config.endpoint, dry_run=config.dry_run, requested=len(sel))
    if config.dry_run:  # read-only: no request, no credentials, the ledger untouched
        rows = ledger.rows(round_name)
        linked = set(rows.loc[rows["state"] == "linked", "galaxy_id"])
        report.linked_total = int(sel["galaxy_id"].isin(linked).sum())
        report.would_upload = len(sel) - report.linked_total
        report.summary = ledger.summary(round_name)
        return report
    ledger.record_selection(round_name, sel, subject_set_name=config.subject_set_name)
    with panoptes_session(config.endpoint, config.admin) as session:
        uploader = _Uploader(session.pc, sel, ledger, round_name, config, report, session.secrets, progress)
        try:
            uploader.run()
        except session.pc.panoptes.PanoptesAPIException as exc:
            report.errors.append(f"Zooniverse API error: {session.clean(exc)}")
        except OSError as exc:  # requests' network errors are OSErrors too
            report.errors.append(f"network error talking to {config.endpoint}: {session.clean(exc)}")
        except (ValueError, KeyError, TypeError) as exc:  # an answer that is not Panoptes JSON
            report.errors.append(f"{config.endpoint} answered in a way Panoptes does not "
                                 f"({type(exc).__name__}: {session.clean(exc)}); check --endpoint")
    rows = ledger.rows(round_name)
    rows = rows[rows["galaxy_id"].isin(set(sel["galaxy_id"]))]
    report.linked_total = int((rows["state"] == "linked").sum())
    report.summary = ledger.summary(round_name)
    return report
