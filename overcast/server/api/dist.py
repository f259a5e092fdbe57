"""The control plane serves its own agent to VMs: `GET /api/v1/dist/...`, no auth.

Nothing here is secret (it is overcast's open code and public package pins); a builder VM
checks the wheel against the sha256 of the index before installing it.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from overcast.server.dist import DIST_NAME, AgentWheel, agent_wheel

router = APIRouter(prefix="/dist", tags=["dist"])


async def _wheel(version: str) -> AgentWheel:
    wheel = await run_in_threadpool(agent_wheel)
    if version != wheel.version:
        raise HTTPException(404, f"This control plane serves {DIST_NAME} {wheel.version} only; "
                                 f"build images with the control plane of version {version}.")
    return wheel


@router.get("/index.json")
async def index() -> dict:
    return (await run_in_threadpool(agent_wheel)).index()


@router.get(f"/{DIST_NAME}-{{version}}.whl")
async def wheel_file(version: str) -> Response:
    wheel = await _wheel(version)
    return Response(wheel.data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{wheel.filename}"'})


@router.get(f"/{DIST_NAME}-{{version}}.whl.sha256", response_class=PlainTextResponse)
async def wheel_sha256(version: str) -> str:
    wheel = await _wheel(version)
    return f"{wheel.sha256}  {wheel.filename}\n"


@router.get("/constraints-{version}.txt", response_class=PlainTextResponse)
async def constraints(version: str) -> str:
    return (await _wheel(version)).constraints
