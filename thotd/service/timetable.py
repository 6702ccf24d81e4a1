"""The daemon's timed work, on APScheduler's loop-bound scheduler: the periodic reconcile
scan, the ``schedule`` crontab lines of ``_scripts.json``, and the retries of failed runs.

Jobs call back into the daemon (``reconcile``, ``scheduled``, ``retry``) on the event loop;
this module only decides when. Job ids name what a job is for, so a rebuilt plan replaces
jobs in place and drops those whose schedule is gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from thotd.engine.staleness import Planned, RunKey

log = structlog.get_logger("thotd")

#: ``(project root, run key)`` -> a coroutine the job awaits.
RunJob = Callable[[str, RunKey], Awaitable[None]]


def schedule_job_id(root: str, key: RunKey) -> str:
    return f"cron:{root}:{key[0]}:{key[1]}"


class Timetable:
    """Owns the scheduler; ``start`` it on the running loop, ``close`` it at shutdown."""

    def __init__(self, *, reconcile: Callable[[], Awaitable[Any]], scheduled: RunJob,
                 retry: RunJob) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 600}
        )
        self._reconcile = reconcile
        self._scheduled = scheduled
        self._retry = retry

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def sync(self, reconcile_minutes: float,
             plans: Mapping[str, Mapping[RunKey, Planned]]) -> dict[str, dict[RunKey, str]]:
        """Jobs for the reconcile period and every scheduled run in ``plans`` (by project
        root); returns the schedules that are not crontab lines, by root and run."""
        self.scheduler.add_job(self._reconcile, "interval", minutes=reconcile_minutes,
                               id="reconcile", replace_existing=True, max_instances=1)
        wanted: set[str] = set()
        errors: dict[str, dict[RunKey, str]] = {}
        for root, plan in plans.items():
            errors[root] = {}
            for key, p in plan.items():
                if p.schedule:
                    error = self._add_schedule(root, key, p.schedule)
                    if error is None:
                        wanted.add(schedule_job_id(root, key))
                    else:
                        errors[root][key] = error
        for job in self.scheduler.get_jobs():
            if job.id.startswith("cron:") and job.id not in wanted:
                job.remove()
        return errors

    def _add_schedule(self, root: str, key: RunKey, schedule: str) -> str | None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(schedule)
        except ValueError as exc:
            log.error("bad schedule", container=key[0], script=key[1], schedule=schedule,
                      error=str(exc))
            return (f"{key[0]}/_scripts.json: schedule {schedule!r} is not a crontab line "
                    f"(minute hour day month weekday): {exc}")
        self.scheduler.add_job(self._scheduled, trigger, args=[root, key],
                               id=schedule_job_id(root, key), replace_existing=True)
        return None

    def next_run(self, root: str, key: RunKey) -> float | None:
        """When a scheduled run is due next (epoch seconds), if it has a job."""
        job = self.scheduler.get_job(schedule_job_id(root, key))
        return job.next_run_time.timestamp() if job is not None and job.next_run_time else None

    def retry_later(self, root: str, key: RunKey, delay_s: float) -> None:
        self.scheduler.add_job(
            self._retry, "date", run_date=datetime.now() + timedelta(seconds=delay_s),
            args=[root, key], id=f"retry:{root}:{key[0]}:{key[1]}", replace_existing=True,
        )
