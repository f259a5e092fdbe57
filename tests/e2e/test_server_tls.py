"""`overcast server --tls-cert/--tls-key --public-url`: the control plane serves HTTPS itself,
and an agent that trusts the boot document's control_plane_ca talks to it (and one that does
not, cannot)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from overcast.agent.control import ControlPlane, ControlPlaneError
from overcast.bootconfig import BootConfig
from tests.e2e.stack import Proc, cli, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "overcast test control plane")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cp.pem", tmp_path / "cp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _tls_call(url: str, ca: str | None) -> Exception | None:
    boot = BootConfig(control_plane=url, cluster_id=999, cluster_token="nope", role="worker",
                      log_group="x", region="us-east-1", control_plane_ca=ca)

    async def main():
        control = ControlPlane(boot, "i-1")
        try:
            await control._call("GET", "/tls", retry_for=0.5)
        except Exception as exc:  # noqa: BLE001 - the test looks at which one
            return exc
        finally:
            await control.aclose()

    return asyncio.run(main())


def test_https_control_plane_and_an_agent_trusting_its_ca(tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, "OVERCAST_HOME": str(tmp_path), "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y"}
    server = Proc("tls-server", cli("server", "--port", str(port), "--tls-cert", cert,
                                    "--tls-key", key, "--public-url", url), env, tmp_path)
    try:
        trust = ssl.create_default_context(cafile=cert)
        wait_for(lambda: httpx.get(url + "/api/v1/health", verify=trust, timeout=2)
                 .status_code == 200, 60, "the HTTPS control plane", server)
        assert json.loads((tmp_path / "run" / "server.json").read_text())["url"] == url
        pem = Path(cert).read_text()
        # Trusting the boot document's CA: the control plane answers (404: no such cluster).
        answer = _tls_call(url, pem)
        assert isinstance(answer, ControlPlaneError) and answer.status == 404
        # Without it, TLS verification fails: no answer at all.
        refused = _tls_call(url, None)
        assert isinstance(refused, ConnectionError)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/api/v1/health", timeout=2)
    finally:
        server.stop()
