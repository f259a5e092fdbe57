"""The control plane: FastAPI app (API under /api/v1), with the reconciler running inside."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, FastAPI

from overcast import reachability, settings
from overcast.reconciler.loop import Reconciler
from overcast.server import dist as agent_dist
from overcast.server import listcache, web
from overcast.server.admission import Admission, Gate
from overcast.server.api import accounts, agent, clusters, dist, images, me, notifications, tokens
from overcast.server.api import backend as backend_api
from overcast.server.api import envs as envs_api
from overcast.server.auth import principal_in
from overcast.server.clusterlists import ClusterLists
from overcast.server.clustertokens import ClusterTokens
from overcast.server.heartbeats import Heartbeats
from overcast.server.logs import LogReader
from overcast.server.nul_guard import NulGuard
from overcast.server.readyreports import ReadyReports
from overcast.server.scheduler_watch import SchedulerWatch
from overcast.server.tokencache import TokenCache
from overcast.server.usage import LastUsed
from overcast.store.db import Database

log = logging.getLogger("overcast.server")


def create_app(db: Database | None = None, control_plane_url: str = "http://127.0.0.1:8600",
               run_reconciler: bool = True, control_plane_ca: str | None = None) -> FastAPI:
    """`control_plane_url` is the public URL VMs dial (`--public-url`); `control_plane_ca` the
    PEM they trust for it (boot document's control_plane_ca), None for the system CAs."""
    db = db or Database()
    db.migrate()
    reconciler = Reconciler(db, control_plane_url, control_plane_ca=control_plane_ca) \
        if run_reconciler else None
    last_used = LastUsed(db)
    heartbeats = Heartbeats(db)
    gate = Gate(settings.api_concurrency())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Worker threads: admitted requests, the list fast path's lane, event streams' polls.
        to_thread.current_default_thread_limiter().total_tokens = gate.slots + listcache.LANE + 8
        last_used.start()
        heartbeats.start()
        agent_dist.prebuild()
        if reconciler:
            reconciler.start()
        yield
        if reconciler:
            reconciler.stop()
        last_used.stop()  # writes the last batch of token uses
        heartbeats.stop()  # and of heartbeats

    app = FastAPI(title="overcast", version="0.1.0", lifespan=lifespan,
                  openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs")
    app.state.db = db
    app.state.reconciler = reconciler
    app.state.last_used = last_used
    app.state.heartbeats = heartbeats
    app.state.scheduler_watch = SchedulerWatch(db)
    app.state.ready_reports = ReadyReports(db)
    app.state.cluster_tokens = ClusterTokens()  # agents' bearer checks without a query
    app.state.gate = gate
    app.add_middleware(NulGuard)  # inside the gate: a refused request is cheap either way
    app.add_middleware(Admission, gate=gate)
    # Outermost: a plain cluster list answered from memory needs no slot at all.
    lane = listcache.Lane()
    app.state.lists = ClusterLists(partial(clusters.active_items, db), lane.run)
    app.state.tokens = TokenCache(partial(principal_in, db), lane.run)
    app.add_middleware(listcache.ListCache, lists=app.state.lists, tokens=app.state.tokens,
                       last_used=last_used)
    app.state.log_reader = LogReader(reconciler.contexts if reconciler else _contexts())
    api = APIRouter(prefix="/api/v1")
    for module in (me, clusters, agent, notifications, dist, images):
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


def public_url(host: str, port: int, given: str | None, tls: bool) -> str:
    """The URL VMs use: `--public-url`, else env OVERCAST_PUBLIC_URL, else the bind address."""
    if given or os.environ.get("OVERCAST_PUBLIC_URL"):
        return (given or os.environ["OVERCAST_PUBLIC_URL"]).rstrip("/")
    bind = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"{'https' if tls else 'http'}://{bind}:{port}"


def serve(host: str = "127.0.0.1", port: int = 8600, *, public: str | None = None,
          tls_cert: str | None = None, tls_key: str | None = None,
          public_ca: str | None = None) -> None:
    """Run the control plane. With tls_cert/tls_key it serves HTTPS itself; VMs trust
    `public_ca` (a PEM file), else the certificate file itself (a self-signed certificate or
    its chain), else the system CAs (a certificate from a public CA, or a proxy in front)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    public = public_url(host, port, public, bool(tls_cert))
    ca_file = public_ca or tls_cert
    ca = Path(ca_file).read_text() if ca_file else None
    # Said at start as well as refused at launch time (reachability.py).
    problem = reachability.unreachable_reason(public, os.environ.get("AWS_ENDPOINT_URL_EC2")
                                              or os.environ.get("AWS_ENDPOINT_URL"))
    if problem:
        log.warning("%s Clusters will be refused until then.", problem)
    app = create_app(control_plane_url=public, control_plane_ca=ca)
    # The event loop (health, admission, streams) shares the GIL with request and reconciler
    # threads; a shorter switch interval (default 5 ms) gets it back sooner when they are busy.
    sys.setswitchinterval(0.001)
    gc.freeze()  # start-up objects (imports, app) out of the collector's way: shorter pauses
    (settings.run_dir() / "server.json").write_text(
        json.dumps({"url": public, "pid": os.getpid()}))
    uvicorn.run(app, host=host, port=port, log_level="warning",
                ssl_certfile=tls_cert, ssl_keyfile=tls_key)
