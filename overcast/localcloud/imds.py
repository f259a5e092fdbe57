"""An EC2 instance metadata service for every local instance, one server, a prefix per instance.

An instance's agent gets `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:P/<instance id>`;
botocore joins that base with `latest/...`, so the first path segment tells us the instance.
Credentials come from a provider callback (the runner's: assume the instance profile's role in
the instance's own moto account), looked up at request time because moto associates the
profile only after the instance exists.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from overcast.localcloud.identity import IdentitySigner, document

# (instance id) -> (role name, credentials dict) or None when the instance has no role.
CredentialProvider = Callable[[str], "tuple[str, dict[str, Any]] | None"]


@dataclass
class InstanceMetadata:
    instance_id: str
    user_data: str | bytes  # bytes: as given to RunInstances (may be gzip'd, binary)
    local_ipv4: str
    availability_zone: str
    instance_type: str = "t3.medium"
    spot_action: dict[str, str] | None = None  # set by a spot interruption notice
    extra: dict[str, str] = field(default_factory=dict)
    # For the signed instance identity document (localcloud/identity.py).
    account_id: str = ""
    image_id: str = ""
    launch_time: dt.datetime | None = None


class MetadataService:
    def __init__(self, port: int = 4598, host: str = "127.0.0.1",
                 credentials: CredentialProvider | None = None,
                 signer: IdentitySigner | None = None) -> None:
        self.instances: dict[str, InstanceMetadata] = {}
        self.credentials = credentials
        self.signer = signer or IdentitySigner()  # signs identity documents, as EC2 does
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        service = self

        class Handler(_Handler):
            imds = service

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="imds",
                                        daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever if serve_forever never ran
            self._server.shutdown()
        self._server.server_close()

    def endpoint_for(self, instance_id: str) -> str:
        return f"{self.url}/{instance_id}"

    def register(self, meta: InstanceMetadata) -> None:
        with self._lock:
            self.instances[meta.instance_id] = meta

    def unregister(self, instance_id: str) -> None:
        with self._lock:
            self.instances.pop(instance_id, None)

    def new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return token

    def token_ok(self, token: str | None) -> bool:
        return token is None or token in self._tokens  # IMDSv1 (no token) is allowed too

    def lookup(self, instance_id: str, path: str) -> tuple[int, str, str | bytes]:
        """(status, content type, body) for GET <instance id>/latest/<path>."""
        meta = self.instances.get(instance_id)
        if meta is None:
            return 404, "text/plain", "unknown instance"
        if path == "user-data":
            if not meta.user_data:
                return 404, "text/plain", "no user data"
            ctype = "application/octet-stream" if isinstance(meta.user_data, bytes) else (
                "text/plain")
            return 200, ctype, meta.user_data
        if path.startswith("dynamic/instance-identity/"):
            return self._identity(meta, path[len("dynamic/instance-identity/"):])
        if not path.startswith("meta-data"):
            return 404, "text/plain", "not found"
        item = path[len("meta-data"):].strip("/")
        simple = {
            "instance-id": meta.instance_id,
            "local-ipv4": meta.local_ipv4,
            "public-ipv4": meta.local_ipv4,
            "hostname": meta.local_ipv4,
            "instance-type": meta.instance_type,
            "placement/availability-zone": meta.availability_zone,
            "placement/region": meta.availability_zone[:-1],
            **meta.extra,
        }
        if item in simple:
            return 200, "text/plain", simple[item]
        if item == "":
            return 200, "text/plain", "\n".join(sorted({k.split("/")[0] for k in simple}
                                                       | {"iam/"}))
        if item == "spot/instance-action":
            if meta.spot_action is None:
                return 404, "text/plain", "not found"
            return 200, "application/json", json.dumps(meta.spot_action)
        if item.startswith("iam/security-credentials"):
            found = self.credentials(instance_id) if self.credentials else None
            if found is None:
                return 404, "text/plain", "no instance profile"
            role, creds = found
            rest = item[len("iam/security-credentials"):].strip("/")
            if rest == "":
                return 200, "text/plain", role
            if rest == role:
                return 200, "application/json", json.dumps(creds)
        return 404, "text/plain", "not found"


    def identity_document(self, meta: InstanceMetadata) -> str:
        return document(account_id=meta.account_id, instance_id=meta.instance_id,
                        region=meta.availability_zone[:-1], zone=meta.availability_zone,
                        image_id=meta.image_id, instance_type=meta.instance_type,
                        private_ip=meta.local_ipv4, pending_time=meta.launch_time)

    def _identity(self, meta: InstanceMetadata, item: str) -> tuple[int, str, str]:
        text = self.identity_document(meta)
        if item == "document":
            return 200, "text/plain", text
        if item == "signature":
            return 200, "text/plain", self.signer.sign(text)
        return 404, "text/plain", "not found"


class _Handler(BaseHTTPRequestHandler):
    imds: MetadataService
    protocol_version = "HTTP/1.1"

    def _split(self) -> tuple[str, str]:
        parts = self.path.split("?")[0].strip("/").split("/", 2)
        if len(parts) < 2 or parts[1] != "latest":
            return "", ""
        return parts[0], parts[2] if len(parts) > 2 else ""

    def _send(self, status: int, ctype: str, body: str | bytes) -> None:
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        instance_id, path = self._split()
        if path != "api/token" or instance_id not in self.imds.instances:
            return self._send(404, "text/plain", "not found")
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self._send(400, "text/plain", "missing token ttl")
        self._send(200, "text/plain", self.imds.new_token())

    def do_GET(self) -> None:
        if not self.imds.token_ok(self.headers.get("X-aws-ec2-metadata-token")):
            return self._send(401, "text/plain", "invalid token")
        instance_id, path = self._split()
        self._send(*self.imds.lookup(instance_id, path))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # botocore polls often; request lines would drown the local cloud's log
