"""iocmng 2.x paths: ``/tasks`` and ``/jobs`` list, add and delete plugins of one kind.

They are the same operations as ``/plugins`` with the kind checked, so an iocmng client
keeps working and a job POSTed to ``/tasks`` is refused with 422 WRONG_KIND.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from iochost.api.auth import require_admin, require_read
from iochost.api.deps import get_supervisor
from iochost.api.models import Deleted
from iochost.api.ratelimit import limit_expensive
from iochost.supervisor import Supervisor
from iochost.api.models import PluginRequest
from iochost.kinds import Kind
from iochost.supervisor.models import PluginList, PluginRecord

router = APIRouter(tags=["iocmng compatibility"])


def _routes_for(kind: Kind, collection: str) -> None:
    async def list_kind(request: Request) -> Response:
        state = request.app.state
        return state.record_cache.plugin_list(state.supervisor.list(kind), complete=False)

    async def add_kind(request: PluginRequest, sup: Supervisor = Depends(get_supervisor)) -> PluginRecord:
        return await sup.add(request.to_add(kind))

    async def delete_kind(name: str, sup: Supervisor = Depends(get_supervisor)) -> Deleted:
        await sup.remove(name, kind=kind)
        return Deleted(name=name)

    router.add_api_route(f"/{collection}", list_kind, methods=["GET"], response_model=PluginList,
                         dependencies=[Depends(require_read)], summary=f"List {collection}",
                         name=f"list_{collection}")
    router.add_api_route(f"/{collection}", add_kind, methods=["POST"], response_model=PluginRecord,
                         status_code=status.HTTP_201_CREATED,
                         dependencies=[Depends(require_admin), Depends(limit_expensive)],
                         summary=f"Add a {kind}", name=f"add_{kind}")
    router.add_api_route(f"/{collection}/{{name}}", delete_kind, methods=["DELETE"], response_model=Deleted,
                         dependencies=[Depends(require_admin)], summary=f"Delete a {kind}",
                         name=f"delete_{kind}")


_routes_for("task", "tasks")
_routes_for("job", "jobs")
