"""``/jobs/{name}/run`` and its runs: one active run per job, the last runs kept."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Query, status
from fastapi.responses import JSONResponse

from iochost.api.auth import require_admin, require_read
from iochost.api.bodies import RunAccepted, RunOutcome, RunRequest
from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor
from iochost.supervisor.public import RunList, RunRecord

router = APIRouter(prefix="/jobs", tags=["jobs"])


async def run_outcome(sup: Supervisor, name: str, body: RunRequest | None) -> RunOutcome:
    """Run the job and wait for its result, with iocmng's ``ok`` (``POST /plugins/{name}/run`` too)."""
    return RunOutcome.of(await sup.run_job(name, body.parameters if body is not None else {}, wait=True))


@router.post("/{name}/run", response_model=RunOutcome, dependencies=[Depends(require_admin)],
             responses={202: {"model": RunAccepted, "description": "run started (wait=false)"}})
async def run_job(
    name: str,
    body: RunRequest | None = Body(default=None),
    wait: bool = Query(default=True, description="wait for the result (default) or answer 202 at once"),
    sup: Supervisor = Depends(get_supervisor),
) -> RunOutcome | JSONResponse:
    """Run the job once. A second run while one is active gets 409 EXECUTION_LOCKED."""
    if wait:
        return await run_outcome(sup, name, body)
    run = await sup.run_job(name, body.parameters if body is not None else {}, wait=False)
    accepted = RunAccepted(run_id=run.run_id, state=run.state)
    return JSONResponse(accepted.model_dump(), status_code=status.HTTP_202_ACCEPTED)


@router.get("/{name}/runs", response_model=RunList, dependencies=[Depends(require_read)])
async def list_runs(name: str, sup: Supervisor = Depends(get_supervisor)) -> RunList:
    runs = sup.list_runs(name)
    return RunList(runs=runs, count=len(runs))


@router.get("/{name}/runs/{run_id}", response_model=RunRecord, dependencies=[Depends(require_read)])
async def get_run(name: str, run_id: str, sup: Supervisor = Depends(get_supervisor)) -> RunRecord:
    return sup.get_run(name, run_id)


@router.post("/{name}/runs/{run_id}/cancel", response_model=RunRecord, dependencies=[Depends(require_admin)])
async def cancel_run(name: str, run_id: str, sup: Supervisor = Depends(get_supervisor)) -> RunRecord:
    """Cancel the active run; naming any other run gets 409 RUN_ID_MISMATCH."""
    return await sup.cancel_run(name, run_id)
