"""One galaxy, several subjects: the classifications of a galaxy sent back to Zooniverse form one consensus.

``select-next-batch`` uploads each galaxy with its id as hidden metadata (``#galaxy_id``) and
``--include-unfinished`` sends a galaxy the workflow retired unfinished back as a *new* subject. Aggregated by
subject, its volunteers would be split between two consensuses, neither with the evidence of both. The
marks are already in the galaxy's original pixels (:mod:`clumptool.aggregation.frames`), so the export reader
merges them: every subject of a galaxy is read as the galaxy's **newest** subject (the highest id, the one
Zooniverse created last and still shows, which ``retire`` acts on), and a volunteer who classified the galaxy
under two subjects counts once (their first classification), as any repeat classification does.

A subject's galaxy is its ``#galaxy_id`` (or ``galaxy_id``) metadata, else its own id: a project's original
subject *is* its galaxy, so galaxy 123 sent back as subject 456 (``#galaxy_id`` 123) merges with subject 123.
Galaxy ids and subject ids must therefore either be one id space (Clump Scout's: a pool of original
subjects) or never coincide. Pure: tables in, tables out.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from clumptool.common.ids import subject_id_text
from clumptool.common.metadata import metadata_value

GALAXY_ID_KEY = "galaxy_id"  # select-next-batch uploads each galaxy with its id as hidden metadata (#galaxy_id)
#: aggregate's subjects table: classifications of the galaxy under its earlier subjects (sent back since), whose
#: subject ids are listed in EARLIER_SUBJECTS_COLUMN (";"-separated, "" for most galaxies)
EARLIER_VIEWERS_COLUMN = "n_viewers_earlier_subjects"
EARLIER_SUBJECTS_COLUMN = "earlier_subject_ids"


def galaxy_id_in_metadata(meta: object) -> str | None:
    """The galaxy id text a subject's metadata carries (``#galaxy_id``, ``!galaxy_id`` or ``galaxy_id``), or None."""
    return subject_id_text(metadata_value(meta, GALAXY_ID_KEY)) if isinstance(meta, dict) else None


def galaxy_ids_in_subject_data(subject_ids: np.ndarray, texts: list[object]) -> dict[int, str]:
    """subject id -> galaxy id for the subjects whose ``subject_data`` (the export's JSON column, one object keyed
    by the subject id) carries one; texts without ``galaxy_id`` are not parsed (most subjects)."""
    out: dict[int, str] = {}
    for sid, text in zip(subject_ids, texts, strict=True):
        if not isinstance(text, str) or "galaxy_id" not in text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        gid = galaxy_id_in_metadata(obj.get(str(sid)) if isinstance(obj, dict) else None)
        if gid is not None:
            out[int(sid)] = gid
    return out


def newest_subject_of_galaxy(subject_ids: np.ndarray, galaxy_of: dict[int, str]) -> pd.Series:
    """For the subjects among ``subject_ids`` that share a galaxy with another of them: subject id -> the
    galaxy's newest (largest) subject id there (itself for the newest). Subjects alone with their galaxy are not
    listed, so an export without re-uploaded galaxies maps nothing."""
    ids = pd.unique(np.asarray(subject_ids, dtype="int64"))
    if not galaxy_of or len(ids) == 0:
        return pd.Series(dtype="int64")
    galaxy = pd.Series([galaxy_of.get(int(s), str(int(s))) for s in ids], index=ids)
    size = galaxy.map(galaxy.value_counts())
    shared = galaxy[size.to_numpy() > 1]
    if shared.empty:
        return pd.Series(dtype="int64")
    newest = shared.groupby(shared).transform(lambda g: g.index.max())
    return pd.Series(newest.to_numpy(dtype="int64"), index=shared.index.to_numpy(dtype="int64"))


def merge_subjects(subject_ids: pd.Series, newest: pd.Series) -> pd.Series:
    """``subject_ids`` with every subject of a shared galaxy replaced by the galaxy's newest subject id."""
    if newest.empty:
        return subject_ids
    mapped = subject_ids.map(newest)
    return mapped.fillna(subject_ids).astype("int64")


def newest_by_shown(classifications: pd.DataFrame) -> pd.Series:
    """The reader's merge as a mapping: the subject each volunteer saw (``shown_subject_id``) -> the subject its
    classification counts under (``subject_id``, the galaxy's newest)."""
    return classifications.drop_duplicates("shown_subject_id").set_index("shown_subject_id")["subject_id"]


def earlier_subjects(classifications: pd.DataFrame) -> pd.DataFrame:
    """Per merged galaxy (``subject_id``: its newest subject): the classifications under its earlier subjects
    (:data:`EARLIER_VIEWERS_COLUMN`) and their ids (:data:`EARLIER_SUBJECTS_COLUMN`). ``classifications`` needs
    ``subject_id`` (merged) and ``shown_subject_id`` (the subject the volunteer saw); galaxies of one subject are
    not listed."""
    earlier = classifications[classifications["shown_subject_id"] != classifications["subject_id"]]
    if earlier.empty:
        return pd.DataFrame({"subject_id": pd.Series(dtype="int64"), EARLIER_VIEWERS_COLUMN: pd.Series(dtype="int64"),
                             EARLIER_SUBJECTS_COLUMN: pd.Series(dtype=object)})
    g = earlier.groupby("subject_id")
    return pd.DataFrame({
        EARLIER_VIEWERS_COLUMN: g.size().astype("int64"),
        EARLIER_SUBJECTS_COLUMN: g["shown_subject_id"].agg(lambda s: ";".join(map(str, sorted(set(s.tolist()))))),
    }).rename_axis("subject_id").reset_index()


def with_earlier_subjects(subjects: pd.DataFrame, classifications: pd.DataFrame) -> pd.DataFrame:
    """The subjects table with :data:`EARLIER_VIEWERS_COLUMN` (0 for a galaxy of one subject) and
    :data:`EARLIER_SUBJECTS_COLUMN` ("" for one), from the kept classifications (see :func:`earlier_subjects`)."""
    out = subjects.drop(columns=[c for c in (EARLIER_VIEWERS_COLUMN, EARLIER_SUBJECTS_COLUMN) if c in subjects])
    if "shown_subject_id" not in classifications:
        out[EARLIER_VIEWERS_COLUMN] = 0
        out[EARLIER_SUBJECTS_COLUMN] = ""
        return out
    table = earlier_subjects(classifications).set_index("subject_id")
    sid = out["subject_id"]
    out[EARLIER_VIEWERS_COLUMN] = sid.map(table[EARLIER_VIEWERS_COLUMN]).fillna(0).astype("int64")
    out[EARLIER_SUBJECTS_COLUMN] = sid.map(table[EARLIER_SUBJECTS_COLUMN]).fillna("").astype(object)
    return out


def galaxy_subject_per_row(subject_ids: pd.Series, subject_data: pd.Series | None) -> pd.Series:
    """Per export row (``subject_ids`` as int64, ``subject_data`` the export's JSON column or None): the galaxy's
    newest subject id, as the reader merges them (the row's own id for a galaxy of one subject)."""
    if subject_data is None:
        return subject_ids
    first = pd.DataFrame({"sid": subject_ids.to_numpy(), "data": subject_data.to_numpy()}).drop_duplicates("sid")
    galaxy_of = galaxy_ids_in_subject_data(first["sid"].to_numpy(), first["data"].tolist())
    return merge_subjects(subject_ids, newest_subject_of_galaxy(first["sid"].to_numpy(), galaxy_of))
