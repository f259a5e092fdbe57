"""Signed instance identity documents for unit tests: the local cloud's signer (as its IMDS
serves them), its certificate configured as the control plane's (OVERCAST_IDENTITY_CERTS)."""

from __future__ import annotations

from overcast.agent.control import identity_headers
from overcast.localcloud.identity import IdentitySigner, document

ACCOUNT = "123456789012"


class Identities:
    def __init__(self, tmp_path, monkeypatch) -> None:
        self.signer = IdentitySigner()  # in memory
        cert = tmp_path / "identity-cert.pem"
        cert.write_text(self.signer.cert_pem)
        monkeypatch.setenv("OVERCAST_IDENTITY_CERTS", str(cert))

    def document(self, instance_id: str, region: str = "us-east-1",
                 account: str = ACCOUNT) -> str:
        return document(account_id=account, instance_id=instance_id, region=region,
                        zone=f"{region}a", image_id="ami-1", instance_type="m6i.large",
                        private_ip="10.0.0.5", pending_time=None)

    def headers(self, instance_id: str, **kwargs) -> dict[str, str]:
        doc = self.document(instance_id, **kwargs)
        return identity_headers(doc, self.signer.sign(doc))
