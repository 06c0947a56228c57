"""Export jobs on disk: ``<data dir>/exports/<job id>/`` holds ``job.json`` (its state,
replaced atomically) and the ndjson files. A job belongs to the reader that started it;
its files live on the hub replica that ran it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import orjson

IN_PROGRESS, COMPLETE, FAILED = "in-progress", "complete", "error"
_JOB_ID = frozenset("0123456789abcdef")


@dataclass
class Job:
    id: str
    owner_kind: str
    owner_id: str
    request: str  # the kick-off URL, as the manifest repeats it
    transaction_time: str
    deidentified: bool
    status: str = IN_PROGRESS
    progress: str = "queued"
    output: list[dict] = field(default_factory=list)
    error: str | None = None
    finished: str | None = None  # when it completed or failed (the hub's clock, RFC 3339)

    def expires(self, retention: timedelta) -> datetime | None:
        """When its files go; None while it runs."""
        if self.finished is None:
            return None
        return datetime.fromisoformat(self.finished.replace("Z", "+00:00")) + retention


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_dir(root: Path, job_id: str) -> Path | None:
    """The job's directory; None for an id that is not one (never a path outside root)."""
    if len(job_id) != 32 or not set(job_id) <= _JOB_ID:
        return None
    return root / job_id


def save(root: Path, job: Job) -> None:
    directory = root / job.id
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "job.json.tmp"
    tmp.write_bytes(orjson.dumps(asdict(job)))
    os.replace(tmp, directory / "job.json")


def load(root: Path, job_id: str) -> Job | None:
    directory = job_dir(root, job_id)
    if directory is None:
        return None
    try:
        return Job(**orjson.loads((directory / "job.json").read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def remove(root: Path, job_id: str) -> None:
    directory = job_dir(root, job_id)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def all_jobs(root: Path) -> Iterator[Job]:
    if not root.is_dir():
        return
    for entry in root.iterdir():
        job = load(root, entry.name)
        if job is not None:
            yield job


def sweep(root: Path, now: datetime, retention: timedelta) -> list[str]:
    """Remove the jobs finished more than ``retention`` ago; their ids.

    Bulk exports hold whole populations' records: they are not kept longer than their
    readers need them to download."""
    gone = []
    for job in all_jobs(root):
        expires = job.expires(retention)
        if expires is not None and expires <= now:
            remove(root, job.id)
            gone.append(job.id)
    return gone
