"""Generated Phoebus displays: a plugin's ``display.bob`` and the daemon's ``index.bob``.

The same bytes ``display.writer.DisplaySync`` keeps in ``DATA_DIR/displays/``; the index's
buttons open ``<name>.bob`` by a relative name, so a client saves the files side by side, and
``/displays/<name>.bob`` serves each plugin's panel next to ``/displays/index.bob``: Phoebus
opening the index from its URL resolves the buttons' files against it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from iochost.api.auth import require_read
from iochost.api.deps import get_supervisor
from iochost.display.writer import index_bob, plugin_bob
from iochost.supervisor import Supervisor

router = APIRouter(tags=["displays"])

BOB = "application/xml"
_BOB_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Phoebus display (.bob XML)", "content": {BOB: {"schema": {"type": "string"}}}}}


@router.get("/plugins/{name}/display.bob", response_class=Response, responses=_BOB_RESPONSE,
            dependencies=[Depends(require_read)])
async def plugin_display(name: str, sup: Supervisor = Depends(get_supervisor)) -> Response:
    """The plugin's panel: default PVs, inputs as write widgets, outputs as read widgets."""
    return Response(await plugin_bob(sup, name), media_type=BOB,
                    headers={"Content-Disposition": f'inline; filename="{name}.bob"'})


@router.get("/displays/index.bob", response_class=Response, responses=_BOB_RESPONSE,
            dependencies=[Depends(require_read)])
async def index_display(sup: Supervisor = Depends(get_supervisor)) -> Response:
    """The daemon's panel: its own PVs, one row per plugin with a button opening ``<name>.bob``."""
    return Response(await index_bob(sup), media_type=BOB,
                    headers={"Content-Disposition": 'inline; filename="index.bob"'})


# After index.bob: Starlette takes the first route that matches, and "{name}.bob" matches "index.bob".
@router.get("/displays/{name}.bob", response_class=Response, responses=_BOB_RESPONSE,
            dependencies=[Depends(require_read)])
async def plugin_display_beside_index(name: str, sup: Supervisor = Depends(get_supervisor)) -> Response:
    """The plugin's panel where the index's Open button looks for it: ``<name>.bob`` beside the
    index's URL (the same bytes as ``/plugins/{name}/display.bob``)."""
    return await plugin_display(name, sup)
