"""The upload runner: `GET /api/v1/upload-runner` (state, throughput, backlog, ETA, uploads in flight), its actions,
`POST /upload-runner/run` (a pass now, 202), `POST /upload-runner/pause` and `/resume`.

Reads need `recording:read`; a site-limited reader sees its sites' uploads and backlog only. Running a
pass needs `recording:control` (it only brings the next pass forward); pausing and resuming stop or
restart uploads for every site, so they need `recording:control` on every site. Each is audited.
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWideWrites
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.offsite.runner import ROUTE, UploadRunner
from hark_fleet.hub.services import upload_runs

READ = "recording:read"
CONTROL = "recording:control"
TARGET = ("upload_runner", "hub")


class RunnerHandler(BaseHandler):
    @property
    def runner(self) -> UploadRunner:
        return self.hub.upload_runner

    async def scoped_status(self) -> dict[str, Any]:
        """The runner's status as this caller may see it (its sites' uploads and backlog when site-limited)."""
        if self.scope.everywhere:
            return self.runner.status()
        sites = self.scope.sites if self.scope.sites is not None else await self._visible_sites()
        backlog = await self.hub.db.run(upload_runs.backlog, sites, ROUTE)
        return self.runner.status(sites, backlog)

    async def _visible_sites(self) -> frozenset[str]:
        """Every site but those hidden from the caller (a scope of all sites less some)."""
        from hark_fleet.hub.db.models import Site

        hidden = self.scope.hidden
        ids = await self.hub.db.run(lambda: [s.id for s in Site.select(Site.id)])
        return frozenset(i for i in ids if i not in hidden)


def runner_actions(runner: UploadRunner, principal: Principal | None, scope: SiteScope) -> dict[str, dict[str, Any]]:
    """What the caller may do to the runner now, and why not."""
    can_control = principal is not None and principal.can(CONTROL)
    everywhere = can_control and principal is not None and principal.scope(CONTROL).sites is None
    denied = "needs recording:control"
    not_everywhere = "needs recording:control on every site (pausing stops uploads for all sites)"

    def state(allowed: bool, reason: str | None) -> dict[str, Any]:
        return {"allowed": allowed, "reason": None if allowed else reason}

    paused = runner.paused
    why_not_control = denied if not can_control else not_everywhere
    return {
        "run": state(can_control and not paused, denied if not can_control else "the runner is paused"),
        "pause": state(everywhere and not paused, why_not_control if not everywhere else "already paused"),
        "resume": state(everywhere and paused, why_not_control if not everywhere else "not paused"),
    }


class UploadRunnerHandler(RunnerHandler):
    """`GET /api/v1/upload-runner`: state (running|paused|idle), concurrency, uploads in flight, throughput, backlog, ETA."""

    permissions = {"get": READ}

    async def get(self) -> None:
        self.write_data(await self.scoped_status())


class UploadRunnerActionsHandler(RunnerHandler):
    """`GET /api/v1/upload-runner/actions`: run, pause, resume, each with whether the caller may and why not."""

    permissions = {"get": READ}

    async def get(self) -> None:
        self.write_data(runner_actions(self.runner, self.principal, self.scope))


class UploadRunnerRunHandler(RunnerHandler):
    """`POST /api/v1/upload-runner/run` (202): a pass now (promote what is due, start uploads in free slots)."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        before = self.runner.status()
        if not self.runner.paused:
            await self.runner.run_now()
        status = await self.scoped_status()
        await self.audit(
            "upload_runner.run",
            permission=CONTROL,
            target=TARGET,
            before={"state": before["state"], "passes": before["passes"]},
            after={"state": status["state"], "passes": status["passes"]},
        )
        self.write_data(status, 202)


class UploadRunnerPauseHandler(RunnerHandler, HubWideWrites):
    """`POST /api/v1/upload-runner/pause`: no new uploads; those in flight stop and go back to the queue (resume kept)."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        was = self.runner.paused
        self.runner.pause()
        await self.audit("upload_runner.pause", permission=CONTROL, target=TARGET, before={"paused": was}, after={"paused": True})
        self.write_data(await self.scoped_status())


class UploadRunnerResumeHandler(RunnerHandler, HubWideWrites):
    """`POST /api/v1/upload-runner/resume`: uploads start again at the next pass (at once)."""

    permissions = {"post": CONTROL}

    async def post(self) -> None:
        was = self.runner.paused
        self.runner.resume()
        await self.audit(
            "upload_runner.resume", permission=CONTROL, target=TARGET, before={"paused": was}, after={"paused": False}
        )
        self.write_data(await self.scoped_status())
