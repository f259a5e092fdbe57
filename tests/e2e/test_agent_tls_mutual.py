"""Per-cluster mutual TLS with real dask servers: a scheduler and a worker in this process,
and clients with the right, no or another cluster's certificate.

The whole agent with the same certificates: test_agent_tls_process.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest
from distributed import Client, Scheduler, Worker

from overcast.security import ClusterTLS, dask_security, generate_cluster_tls

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls() -> ClusterTLS:
    return generate_cluster_tls("tls-test")


@pytest.fixture(scope="module")
def other() -> ClusterTLS:
    return generate_cluster_tls("another-cluster")


def _inc(x: int) -> int:
    return x + 1


async def _with_cluster(tls: ClusterTLS, body) -> None:
    node = tls.node_security()
    async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0", security=node) as s:
        assert s.address.startswith("tls://")
        async with Worker(s.address, security=node, nthreads=1, host="127.0.0.1"):
            await body(s)


@pytest.mark.timeout(60)
def test_client_with_cluster_cert_connects_and_computes(tls: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        async with Client(s.address, security=tls.client_security(), asynchronous=True) as c:
            assert await c.submit(_inc, 41) == 42
            assert len(s.workers) == 1

    asyncio.run(_with_cluster(tls, body))


async def _refused(address: str, exc: type | tuple = OSError, **kwargs) -> BaseException:
    """Assert a Client cannot connect, quickly; return the error."""
    start = time.monotonic()
    client = Client(address, asynchronous=True, timeout="3s", **kwargs)
    try:
        with pytest.raises(exc) as info:
            await client
    finally:
        await client.close()
    assert time.monotonic() - start < 10
    return info.value


@pytest.mark.timeout(60)
def test_client_without_security_is_refused(tls: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        # No ssl context at all: distributed refuses to dial tls:// ...
        await _refused(s.address, TypeError)
        # ... and a plaintext dial of the TLS port is reset by the listener.
        await _refused(s.address.replace("tls://", "tcp://"))
        assert not [c for c in s.clients if c != "fire-and-forget"]

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_tls_client_without_certificate_is_refused_by_the_server(tls: ClusterTLS) -> None:
    """Below distributed: a TLS client that trusts the cluster CA but presents no certificate.
    The handshake must fail on the server side (verify_mode CERT_REQUIRED)."""

    async def body(s: Scheduler) -> None:
        host, port = s.address.removeprefix("tls://").rsplit(":", 1)
        ctx = ssl.create_default_context(cadata=tls.ca_cert)
        ctx.check_hostname = False

        def dial() -> bytes:
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with ctx.wrap_socket(raw) as conn:
                    # TLS 1.3: the server's verdict on the (missing) client certificate arrives
                    # after the client's side of the handshake, on the first read.
                    conn.sendall(b"\0" * 8)
                    return conn.recv(1)

        # Depending on timing the refusal shows as the server's "certificate required" alert, an
        # EOF in the handshake, or a reset; the server logs PEER_DID_NOT_RETURN_A_CERTIFICATE.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            data = await asyncio.get_running_loop().run_in_executor(None, dial)
            if data == b"":
                raise ConnectionResetError("closed by the server")

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_client_with_another_clusters_cert_is_refused(tls: ClusterTLS, other: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        # Another cluster's credentials altogether: the client does not trust this scheduler.
        await _refused(s.address, security=other.client_security())
        # Trusts the right CA but presents another cluster's certificate: the scheduler
        # (CERT_REQUIRED, this cluster's CA only) refuses it.
        mixed = dask_security(tls.ca_cert, other.client_cert, other.client_key)
        err = await _refused(s.address, security=mixed)
        assert "unknown ca" in str(err).lower() or "certificate" in str(err).lower()
        assert not [c for c in s.clients if c != "fire-and-forget"]

    asyncio.run(_with_cluster(tls, body))


@pytest.mark.timeout(60)
def test_worker_of_another_cluster_cannot_join(tls: ClusterTLS, other: ClusterTLS) -> None:
    async def body(s: Scheduler) -> None:
        with pytest.raises((OSError, asyncio.TimeoutError)):
            async with Worker(
                s.address,
                security=other.node_security(),
                nthreads=1,
                host="127.0.0.1",
                death_timeout="3s",
            ):
                pass
        assert len(s.workers) == 1

    asyncio.run(_with_cluster(tls, body))
