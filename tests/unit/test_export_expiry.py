"""Finished bulk exports are deleted once their retention has passed; running ones never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.export import jobs

DAY = timedelta(hours=24)
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _job(root, status: str, finished: datetime | None) -> jobs.Job:
    job = jobs.Job(jobs.new_job_id(), "app", "data-centre", "/fhir/$export",
                   "2026-11-30T00:00:00Z", False, status=status,
                   finished=finished.isoformat().replace("+00:00", "Z") if finished else None)
    jobs.save(root, job)
    (root / job.id / "Patient.ndjson").write_bytes(b"{}\n")
    return job


def test_sweep_removes_only_jobs_past_their_retention(tmp_path):
    old = _job(tmp_path, jobs.COMPLETE, NOW - DAY - timedelta(seconds=1))
    failed = _job(tmp_path, jobs.FAILED, NOW - 2 * DAY)
    recent = _job(tmp_path, jobs.COMPLETE, NOW - DAY + timedelta(minutes=1))
    running = _job(tmp_path, jobs.IN_PROGRESS, None)

    gone = jobs.sweep(tmp_path, NOW, DAY)

    assert sorted(gone) == sorted([old.id, failed.id])
    assert not (tmp_path / old.id).exists() and not (tmp_path / failed.id).exists()
    assert jobs.load(tmp_path, recent.id) == recent
    assert (tmp_path / running.id / "Patient.ndjson").exists()


def test_expiry_is_finish_time_plus_retention(tmp_path):
    job = _job(tmp_path, jobs.COMPLETE, NOW)
    assert jobs.load(tmp_path, job.id).expires(DAY) == NOW + DAY
    assert jobs.Job("x" * 32, "app", "a", "/", "t", False).expires(DAY) is None


def test_sweep_of_a_missing_directory_is_a_no_op(tmp_path):
    assert jobs.sweep(tmp_path / "exports", NOW, DAY) == []
