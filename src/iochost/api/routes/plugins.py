"""``/plugins``: add, list, inspect, start, stop, restart, delete, logs; iocmng's ``run``."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status

from iochost.api.auth import require_admin, require_read
from iochost.api.bodies import Deleted, LogTail, PluginOutcome, PluginRequest, RunOutcome, RunRequest, UpgradeRequest
from iochost.api.deps import get_supervisor
from iochost.api.listing import plugin_list_response
from iochost.api.ratelimit import limit_expensive
from iochost.api.routes.compat import added
from iochost.api.routes.jobs import run_outcome
from iochost.kinds import Kind
from iochost.supervisor import Supervisor
from iochost.supervisor.public import PluginList, PluginRecord

router = APIRouter(prefix="/plugins", tags=["plugins"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PluginOutcome,
             dependencies=[Depends(require_admin), Depends(limit_expensive)])
async def add_plugin(request: PluginRequest, sup: Supervisor = Depends(get_supervisor)) -> PluginOutcome:
    """Fetch, validate and start a plugin; answers once its IOC is READY (or stored, if not started)."""
    return await added(sup, request.to_add())


@router.get("", response_model=PluginList, dependencies=[Depends(require_read)])
async def list_plugins(request: Request,
                       type: Kind | None = Query(default=None, description="only tasks or only jobs "
                                                 "(iocmng's filter)")) -> Response:
    # Live records; the JSON of one that did not change since the last request is reused.
    # Most polls never get here: ``api.list_shortcut`` answers them with this same function.
    return plugin_list_response(request.app.state, type)


@router.get("/{name}", response_model=PluginRecord, dependencies=[Depends(require_read)])
async def get_plugin(name: str, request: Request) -> Response:
    state = request.app.state
    return state.record_cache.plugin(state.supervisor.get(name))


@router.delete("/{name}", response_model=Deleted, dependencies=[Depends(require_admin)])
async def delete_plugin(name: str, sup: Supervisor = Depends(get_supervisor)) -> Deleted:
    """Answers after the worker has exited: its PVs are off the network, its checkout gone."""
    await sup.remove(name)
    return Deleted.of(name)


@router.post("/{name}/start", response_model=PluginRecord,
             dependencies=[Depends(require_admin), Depends(limit_expensive)])
async def start_plugin(name: str, sup: Supervisor = Depends(get_supervisor)) -> PluginRecord:
    return await sup.start_plugin(name)


@router.post("/{name}/stop", response_model=PluginRecord, dependencies=[Depends(require_admin)])
async def stop_plugin(name: str, sup: Supervisor = Depends(get_supervisor)) -> PluginRecord:
    return await sup.stop_plugin(name)


@router.post("/{name}/restart", response_model=PluginOutcome,
             dependencies=[Depends(require_admin), Depends(limit_expensive)])
async def restart_plugin(name: str, sup: Supervisor = Depends(get_supervisor)) -> PluginOutcome:
    """A new worker for the same checkout (iocmng re-fetched the repository here: use ``upgrade``)."""
    return PluginOutcome.of(await sup.restart_plugin(name), f"plugin {name!r} restarted")


@router.post("/{name}/run", response_model=RunOutcome,
             dependencies=[Depends(require_admin)])
async def run_plugin(name: str, body: RunRequest | None = Body(default=None),
                     sup: Supervisor = Depends(get_supervisor)) -> RunOutcome:
    """iocmng's path for running a job once and answering its result (a task: 422 WRONG_KIND)."""
    return await run_outcome(sup, name, body)


@router.post("/{name}/upgrade", response_model=PluginRecord,
             dependencies=[Depends(require_admin), Depends(limit_expensive)])
async def upgrade_plugin(name: str, request: UpgradeRequest, sup: Supervisor = Depends(get_supervisor)) -> PluginRecord:
    """Fetch and validate a new revision while the old worker serves, then switch; a new
    revision that does not run through its probation is rolled back (409 UPGRADE_FAILED)."""
    return await sup.upgrade(name, request.to_change())


@router.get("/{name}/logs", response_model=LogTail, dependencies=[Depends(require_read)])
async def plugin_logs(
    name: str, lines: int = Query(default=200, ge=1, le=5000), sup: Supervisor = Depends(get_supervisor)
) -> LogTail:
    """The tail of the worker's stdout/stderr log (plugin log lines included)."""
    return LogTail(name=name, lines=await sup.logs(name, lines))
