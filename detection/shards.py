"""Resumable work split: a deterministic plan of image shards and a folder of finished Parquet shards.

A survey-sized ``predict`` runs for hours on a cluster and may be killed (time limit, pre-emption, Ctrl-C).
The input list is cut into fixed ranges of ``shard_size`` images (shard ``k`` = images ``k*S .. k*S+S-1``),
whatever the number of processes, so the same input gives the same shards on 1 CPU or 64 GPUs. Each finished
shard is written atomically as ``part-<k>.parquet`` carrying the plan's fingerprint (a hash of every input key
and every setting that changes the rows). A rerun with the same fingerprint skips the shards already on disk;
a different fingerprint (other images, model, threshold ...) discards them, so results of two runs never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clumptool.common.atomic import atomic_path, write_text_atomic

PLAN_NAME = "plan.json"
FINGERPRINT_KEY = b"clumptool_shard"


@dataclass(frozen=True)
class ShardPlan:
    """``n_images`` cut into ranges of ``shard_size``; ``fingerprint`` names the inputs and settings."""

    fingerprint: str
    n_images: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Image index range [start, stop) of shard ``k``."""
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.n_images)

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "n_images": self.n_images, "shard_size": self.shard_size,
                "n_shards": self.n_shards}


def plan_shards(keys: Iterable[str], settings: dict, shard_size: int, extra: Iterable[bytes] = ()) -> ShardPlan:
    """The plan of an input list: ``keys`` (one per image, in order), ``settings`` (JSON-able) and any
    ``extra`` bytes (e.g. per-image metadata arrays) enter the fingerprint."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    n = 0
    for key in keys:
        h.update(key.encode("utf-8", "surrogateescape") + b"\0")
        n += 1
    for blob in extra:
        h.update(blob)
    h.update(f"|{shard_size}".encode())
    return ShardPlan(fingerprint=h.hexdigest()[:32], n_images=n, shard_size=shard_size)


class ShardStore:
    """The shard folder of one plan: which shards are finished, atomic writes, reading back in order."""

    def __init__(self, folder: str | os.PathLike, plan: ShardPlan):
        self.folder, self.plan = Path(folder), plan

    def path(self, k: int) -> Path:
        return self.folder / f"part-{k:06d}.parquet"

    def _is_finished(self, k: int) -> bool:
        p = self.path(k)
        if not p.is_file():
            return False
        try:
            meta = pq.read_schema(p).metadata or {}
        except Exception:  # noqa: BLE001 - an unreadable shard is simply recomputed
            return False
        return meta.get(FINGERPRINT_KEY, b"").decode() == f"{self.plan.fingerprint}:{k}"

    def prepare(self) -> list[int]:
        """Make the folder hold only this plan's finished shards (run once, by one process); the pending ones.

        A folder from another plan (other inputs or settings) is emptied first; temporary files of writes cut
        short by a kill are removed.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_file = self.folder / PLAN_NAME
        try:
            recorded = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        same = isinstance(recorded, dict) and recorded.get("fingerprint") == self.plan.fingerprint
        for p in self.folder.iterdir():
            if p.name.startswith(".") or (not same and p.name != PLAN_NAME):
                p.unlink()
        if not same:
            write_text_atomic(plan_file, json.dumps(self.plan.to_dict(), indent=2) + "\n")
        return [k for k in range(self.plan.n_shards) if not self._is_finished(k)]

    def write(self, k: int, table: pa.Table) -> Path:
        """Write shard ``k`` atomically (a kill mid-write leaves only a hidden temporary file)."""
        meta = dict(table.schema.metadata or {})
        meta[FINGERPRINT_KEY] = f"{self.plan.fingerprint}:{k}".encode()
        target = self.path(k)
        with atomic_path(target) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        return target

    def tables(self) -> Iterator[pa.Table]:
        """Every shard in plan order (all must be finished)."""
        for k in range(self.plan.n_shards):
            yield pq.read_table(self.path(k))
