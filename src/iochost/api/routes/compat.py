"""iocmng 2.x paths: ``/tasks`` and ``/jobs`` list, add and delete plugins of one kind.

They are the same operations as ``/plugins`` with the kind checked, so an iocmng client
keeps working and a job POSTed to ``/tasks`` is refused with 422 WRONG_KIND. Also here:
iocmng's ``/{tasks,jobs}/{name}/startup`` metadata and ``/devices``, the beamline file's
devices. The adds answer iocmng's ``ok``, ``message`` and ``validation`` beside the record
(``added``), and so does a failed add's error body (``ok`` false, the validation report).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status

from iochost.api.auth import require_admin, require_read
from iochost.api.bodies import Deleted, Devices, PluginOutcome, PluginRequest, StartupInfo, validation_report
from iochost.api.deps import get_supervisor
from iochost.api.listing import plugin_list_response
from iochost.api.ratelimit import limit_expensive
from iochost.beamline import build_index
from iochost.config import plugin_mode
from iochost.config.issues import ConfigError
from iochost.config.load import load_config
from iochost.config.pvnames import default_pv_names
from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.store import DESIRED_RUNNING
from iochost.supervisor import Supervisor
from iochost.supervisor.adding import AddRequest
from iochost.supervisor.public import PluginList, PluginRecord
from iochost.supervisor.view import PluginView

router = APIRouter(tags=["iocmng compatibility"])


async def added(sup: Supervisor, request: AddRequest) -> PluginOutcome:
    """Add, answering iocmng's fields beside the record. A refusal that validation found
    (the checks, or the wrong kind) carries iocmng's ``validation`` report in its error body."""
    try:
        record = await sup.add(request)
    except IochostError as exc:
        if exc.code is ErrorCode.VALIDATION_FAILED:
            texts = [_issue_text(issue) for issue in exc.details.get("errors") or []]
            exc.details.setdefault("validation", validation_report(None, request.class_name, texts or [exc.message]))
        elif exc.code is ErrorCode.WRONG_KIND:
            exc.details.setdefault("validation", validation_report(None, request.class_name, [exc.message]))
        raise
    return PluginOutcome.of(record, f"plugin {record.name!r} added ({record.kind}, {record.state.value})")


def _issue_text(issue: dict[str, Any]) -> str:
    where = ":".join(str(part) for part in (issue.get("file"), issue.get("line")) if part)
    return f"{where}: {issue.get('message')}" if where else str(issue.get("message"))


def _startup_info(view: PluginView, config: Any, daemon_prefix: str) -> StartupInfo:
    """iocmng's start-up metadata from the plugin's view and its config.yaml (None: unreadable)."""
    entry, record = view.entry, view.record
    parameters = dict(config.parameters.model_dump(mode="json", exclude_unset=True)) if config else {}
    parameters.update(entry.parameters)
    pv_definitions = config.pvs.model_dump(mode="json", exclude_unset=True) if config else {}
    mode: str | None = None  # a string from a checkout that no longer validates, too
    if config is not None:  # as the worker derives it: iocmng's `triggered: true` override included
        try:
            mode = plugin_mode(entry.kind, config.with_parameters(entry.parameters).parameters)
        except ConfigError:  # overrides the checkout no longer accepts: its worker says why
            mode = None
    if entry.kind == "task" and mode is None:
        mode = str(parameters.get("mode") or "continuous").lower()
    inputs = list(config.pvs.inputs) if config else []
    outputs = list(config.pvs.outputs) if config else []
    base = default_pv_names(entry.kind, mode, config.pvs if config else None)
    device = f"{record.pv_prefix}:"
    built = [pv.removeprefix(device) for pv in record.pvs] or list(dict.fromkeys(base + inputs + outputs))
    return StartupInfo(
        name=entry.name, plugin_type=entry.kind, auto_start=entry.desired_state == DESIRED_RUNNING,
        auto_start_on_boot=entry.auto_start_on_boot is not False, autostart_order=entry.autostart_order,
        pv_prefix=record.pv_prefix, plugin_prefix=record.pv_prefix.removeprefix(f"{daemon_prefix}:"), mode=mode,
        start_parameters=parameters, arguments=pv_definitions, pv_definitions=pv_definitions,
        base_control_pvs=base, additional_input_pvs=inputs, additional_output_pvs=outputs, built_pvs=built,
        state=record.state,
    )


def _read_config(plugin_dir: Path | None) -> Any:
    if plugin_dir is None:  # not fetched (yet), or its checkout could not be restored
        return None
    try:
        return load_config(plugin_dir)
    except ConfigError:  # validated when added; a checkout changed since shows what the registry has
        return None


@router.get("/devices", response_model=Devices, dependencies=[Depends(require_read)],
            summary="Devices of the beamline file")
async def list_devices(request: Request) -> Devices:
    """iocmng's device list: every ophyd device a plugin can ask for by name."""
    available = list(build_index(request.app.state.settings.beamline_values))
    return Devices(available=available, available_count=len(available), created=[], created_count=0)


def _routes_for(kind: Kind, collection: str) -> None:
    async def list_kind(request: Request) -> Response:
        return plugin_list_response(request.app.state, kind)

    async def add_kind(request: PluginRequest, sup: Supervisor = Depends(get_supervisor)) -> PluginOutcome:
        return await added(sup, request.to_add(kind))

    async def delete_kind(name: str, sup: Supervisor = Depends(get_supervisor)) -> Deleted:
        await sup.remove(name, kind=kind)
        return Deleted.of(name)

    async def get_kind(name: str, request: Request) -> Response:
        state = request.app.state
        return state.record_cache.plugin(state.supervisor.view(name, kind).record)

    async def startup_kind(name: str, request: Request) -> StartupInfo:
        state = request.app.state
        view = state.supervisor.view(name, kind)
        config = await asyncio.to_thread(_read_config, view.plugin_dir)
        return _startup_info(view, config, state.settings.prefix)

    router.add_api_route(f"/{collection}", list_kind, methods=["GET"], response_model=PluginList,
                         dependencies=[Depends(require_read)], summary=f"List {collection}",
                         name=f"list_{collection}")
    router.add_api_route(f"/{collection}", add_kind, methods=["POST"], response_model=PluginOutcome,
                         status_code=status.HTTP_201_CREATED,
                         dependencies=[Depends(require_admin), Depends(limit_expensive)],
                         summary=f"Add a {kind}", name=f"add_{kind}")
    router.add_api_route(f"/{collection}/{{name}}", delete_kind, methods=["DELETE"], response_model=Deleted,
                         dependencies=[Depends(require_admin)], summary=f"Delete a {kind}",
                         name=f"delete_{kind}")
    router.add_api_route(f"/{collection}/{{name}}", get_kind, methods=["GET"], response_model=PluginRecord,
                         dependencies=[Depends(require_read)], summary=f"Get a {kind}", name=f"get_{kind}")
    router.add_api_route(f"/{collection}/{{name}}/startup", startup_kind, methods=["GET"],
                         response_model=StartupInfo, dependencies=[Depends(require_read)],
                         summary=f"Start-up metadata of a {kind}", name=f"startup_{kind}")


_routes_for("task", "tasks")
_routes_for("job", "jobs")
