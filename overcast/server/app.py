"""The control plane: FastAPI app (API under /api/v1), with the reconciler running inside."""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from overcast import settings
from overcast.reconciler.loop import Reconciler
from overcast.server import web
from overcast.server.api import accounts, agent, clusters, me, notifications, tokens
from overcast.server.api import backend as backend_api
from overcast.server.api import envs as envs_api
from overcast.server.logs import LogReader
from overcast.store.db import Database

log = logging.getLogger("overcast.server")


def create_app(db: Database | None = None, control_plane_url: str = "http://127.0.0.1:8600",
               run_reconciler: bool = True) -> FastAPI:
    db = db or Database()
    db.migrate()
    reconciler = Reconciler(db, control_plane_url) if run_reconciler else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if reconciler:
            reconciler.start()
        yield
        if reconciler:
            reconciler.stop()

    app = FastAPI(title="overcast", version="0.1.0", lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs")
    app.state.db = db
    app.state.reconciler = reconciler
    app.state.log_reader = LogReader(reconciler.contexts if reconciler else _contexts())
    api = APIRouter(prefix="/api/v1")
    for module in (me, clusters, agent, notifications):
        api.include_router(module.router)
    api.include_router(backend_api.router)
    api.include_router(accounts.router)
    api.include_router(tokens.router)
    api.include_router(envs_api.router)
    app.include_router(api)
    web.install(app)  # the dashboard's pages, same app
    return app


def _contexts():
    from overcast.reconciler.contexts import ContextFactory
    return ContextFactory()


def serve(host: str = "127.0.0.1", port: int = 8600) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    public = os.environ.get("OVERCAST_PUBLIC_URL") or \
        f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    app = create_app(control_plane_url=public)
    (settings.run_dir() / "server.json").write_text(
        json.dumps({"url": public, "pid": os.getpid()}))
    uvicorn.run(app, host=host, port=port, log_level="warning")
