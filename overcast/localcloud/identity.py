"""The local cloud's instance identity documents, signed as EC2 signs them.

EC2 serves each instance `latest/dynamic/instance-identity/document` (JSON: accountId,
instanceId, region, ...) and `.../signature` (base64 RSA, SHA-256, over the document's bytes),
verifiable with the public certificate AWS publishes per region. The local cloud does the same
with a key of its own: `$OVERCAST_HOME/run/localcloud-identity-key.pem` (mode 0600) and its
self-signed certificate `localcloud-identity.pem`, made once per OVERCAST_HOME and kept, so a
control plane configured with the certificate (OVERCAST_IDENTITY_CERTS) keeps accepting
documents across local-cloud restarts. The certificate's path is in localcloud.json.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "localcloud-identity-key.pem"
CERT_FILE = "localcloud-identity.pem"


class IdentitySigner:
    def __init__(self, run_dir: Path | None = None) -> None:
        """Keeps its key in `run_dir` (made there the first time); None: in memory only."""
        self.cert_path: Path | None = None
        if run_dir is not None and (run_dir / KEY_FILE).is_file() and \
                (run_dir / CERT_FILE).is_file():
            self._key = serialization.load_pem_private_key(
                (run_dir / KEY_FILE).read_bytes(), password=None)
            self.cert_pem = (run_dir / CERT_FILE).read_text()
            self.cert_path = run_dir / CERT_FILE
            return
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert_pem = _self_signed(self._key)
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            key_path = run_dir / KEY_FILE
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self._key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
            (run_dir / CERT_FILE).write_text(self.cert_pem)
            self.cert_path = run_dir / CERT_FILE

    def sign(self, document: str) -> str:
        """The `signature` EC2 serves: base64 of RSA PKCS#1 v1.5 over SHA-256 of the bytes."""
        raw = self._key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode()


def document(*, account_id: str, instance_id: str, region: str, zone: str, image_id: str,
             instance_type: str, private_ip: str, pending_time: dt.datetime | None) -> str:
    """The identity document, with EC2's keys and layout (pretty-printed JSON)."""
    pending = (pending_time or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({
        "accountId": account_id, "architecture": "x86_64", "availabilityZone": zone,
        "billingProducts": None, "devpayProductCodes": None, "marketplaceProductCodes": None,
        "imageId": image_id, "instanceId": instance_id, "instanceType": instance_type,
        "kernelId": None, "pendingTime": pending, "privateIp": private_ip, "ramdiskId": None,
        "region": region, "version": "2017-09-30"}, indent=2)


def _self_signed(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "overcast local cloud"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "instance identity")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()
