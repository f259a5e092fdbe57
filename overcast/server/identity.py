"""Which instance an agent is: its signed instance identity document, checked.

One user data serves a whole batch of instances (and the cluster token is shared by all of a
cluster's VMs), so the instance id in an agent's route is proven, not taken on trust: the agent
sends the document its IMDS serves (`latest/dynamic/instance-identity/document`, base64 in
the `X-Overcast-Identity-Document` header) and its `signature` (`X-Overcast-Identity-Signature`),
an RSA SHA-256 signature by the cloud's key. The control plane verifies it with the public
certificate configured for the cluster's region (OVERCAST_IDENTITY_CERTS: a PEM file used for
every region, or a directory of `<region>.pem` files with an optional `default.pem`; AWS
publishes one certificate per region) and checks the document names this instance, the
cluster's region and, once known, the cluster's AWS account. The cluster token stays the
bearer credential; the document proves which of its VMs is speaking.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import HTTPException, Request

from overcast.store.models import Cluster

CERTS_ENV = "OVERCAST_IDENTITY_CERTS"
DOCUMENT_HEADER = "X-Overcast-Identity-Document"
SIGNATURE_HEADER = "X-Overcast-Identity-Signature"
MAX_DOCUMENT = 4096  # EC2's documents are about 500 bytes


class IdentityError(Exception):
    """Why a document is refused (the message says what to change; no secret in it)."""


@functools.lru_cache(maxsize=64)
def _certificates(source: str, region: str) -> tuple[rsa.RSAPublicKey, ...]:
    """The public keys configured for `region` (cached per configuration)."""
    path = Path(source)
    if path.is_dir():
        files = [f for f in (path / f"{region}.pem", path / "default.pem") if f.is_file()]
    else:
        files = [path] if path.is_file() else []
    keys = []
    for file in files:
        for cert in x509.load_pem_x509_certificates(file.read_bytes()):
            key = cert.public_key()
            if isinstance(key, rsa.RSAPublicKey):
                keys.append(key)
    return tuple(keys)


@functools.lru_cache(maxsize=4096)
def _verified(source: str, region: str, document: bytes, signature: str) -> dict[str, Any]:
    """The document's fields, once its signature verifies (cached: agents resend it)."""
    keys = _certificates(source, region)
    if not keys:
        raise IdentityError(f"The control plane has no instance identity certificate for "
                            f"region {region}: configure {CERTS_ENV}.")
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError("The identity signature is not base64.") from None
    for key in keys:
        try:
            key.verify(raw, document, padding.PKCS1v15(), hashes.SHA256())
            break
        except InvalidSignature:
            continue
    else:
        raise IdentityError("The instance identity document's signature does not verify.")
    try:
        data = json.loads(document)
    except ValueError:
        raise IdentityError("The instance identity document is not JSON.") from None
    if not isinstance(data, dict):
        raise IdentityError("The instance identity document is not a JSON object.")
    return data


def check(document_b64: str | None, signature: str | None, *, instance_id: str,
          cluster: Cluster) -> dict[str, Any]:
    """The verified document for `instance_id` of `cluster`; IdentityError if not."""
    if not document_b64 or not signature:
        raise IdentityError(f"Send this VM's instance identity document and its signature "
                            f"(headers {DOCUMENT_HEADER}, {SIGNATURE_HEADER}).")
    if len(document_b64) > MAX_DOCUMENT * 2 or len(signature) > MAX_DOCUMENT:
        raise IdentityError("The instance identity document is too long.")
    try:
        document = base64.b64decode(document_b64, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"{DOCUMENT_HEADER} must be the document in base64.") from None
    source = os.environ.get(CERTS_ENV, "")
    if not source:
        raise IdentityError(f"The control plane has no instance identity certificates: "
                            f"configure {CERTS_ENV}.")
    data = _verified(source, cluster.region, document, signature)
    if data.get("instanceId") != instance_id:
        raise IdentityError(f"The identity document is instance {data.get('instanceId')!r}'s, "
                            f"not {instance_id}'s.")
    if data.get("region") != cluster.region:
        raise IdentityError(f"The identity document is of region {data.get('region')!r}; "
                            f"this cluster runs in {cluster.region}.")
    if cluster.aws_account_id and data.get("accountId") != cluster.aws_account_id:
        raise IdentityError("The identity document is of another AWS account than this "
                            "cluster's.")
    return data


def require(request: Request, cluster: Cluster, instance_id: str) -> None:
    """The route's check: 403 with the reason when the document does not prove the id."""
    try:
        check(request.headers.get(DOCUMENT_HEADER), request.headers.get(SIGNATURE_HEADER),
              instance_id=instance_id, cluster=cluster)
    except IdentityError as exc:
        raise HTTPException(403, str(exc)) from None
