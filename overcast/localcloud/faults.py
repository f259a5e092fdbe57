"""Failure injection and the local cloud's own control API, as a WSGI middleware before moto.

moto never runs out of capacity, never throttles and never interrupts spot instances. Tests
tell the local cloud to do so over HTTP on its endpoint:

  POST   /_overcast/faults   {"action": "RunInstances", "error": "InsufficientInstanceCapacity",
                              "zones": ["us-east-1a"], "count": 2, "cluster": "12"}
                             (zones, count, cluster optional; action "*": every EC2 action;
                             cluster: only requests naming that overcast:cluster tag, in
                             TagSpecifications or tag filters)
  GET    /_overcast/faults   -> list of active rules;  DELETE /_overcast/faults -> clear all
  POST   /_overcast/<name>   other control handlers registered by the local cloud
                             (spot-interruptions, accounts)

A rule answers matching EC2 requests with the error AWS gives, until its count runs out.
botocore retries 5xx answers (capacity, throttling) a few times, so `count=1` is eaten by
the first attempt and the retry succeeds: use a larger count to make the call fail.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

ERRORS: dict[str, tuple[int, str]] = {
    "InsufficientInstanceCapacity": (
        500, ("We currently do not have sufficient capacity in the Availability Zone you "
              "requested. Our system will be working on provisioning additional capacity.")),
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "Throttling": (400, "Rate exceeded"),
    "InsufficientFreeAddressesInSubnet": (400, "Insufficient free IP addresses in subnet."),
    "MaxSpotInstanceCountExceeded": (400, "Max spot instance count exceeded"),
    "VcpuLimitExceeded": (400, ("You have requested more vCPU capacity than your current vCPU "
                                "limit of 32 allows for the instance bucket that the specified "
                                "instance type belongs to.")),
    "InternalError": (500, "An internal error has occurred."),
    "Unavailable": (503, "The server is overloaded and can't handle the request."),
    # A code overcast has never seen: the "anything else" path.
    "OvercastInjectedUnexpected": (400, "An error no client expects."),
}
CLUSTER_TAG = "overcast:cluster"

Handler = Callable[[dict[str, Any]], Any]


@dataclass
class FaultRule:
    action: str = "RunInstances"
    error: str = "InsufficientInstanceCapacity"
    zones: list[str] | None = None  # None: every zone
    count: int | None = None  # None: until cleared
    cluster: str | None = None  # None: every request; else only those naming this cluster
    id: str = ""


class Faults:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        if rule.error not in ERRORS:
            raise ValueError(f"unknown error {rule.error!r}; known: {', '.join(ERRORS)}")
        rule.id = rule.id or uuid.uuid4().hex[:8]
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def match(self, action: str, zone: str | None,
              params: dict[str, list[str]] | None = None) -> FaultRule | None:
        """The first rule for this request, consuming one of its uses."""
        with self._lock:
            for rule in self._rules:
                if rule.cluster is not None and rule.cluster not in clusters_named(params or {}):
                    continue
                if rule.action in (action, "*") and (rule.zones is None or zone in rule.zones):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self._rules.remove(rule)
                    return rule
        return None


def clusters_named(params: dict[str, list[str]]) -> set[str]:
    """The overcast:cluster tag values an EC2 query request carries (tags it sets or filters
    on), e.g. TagSpecification.1.Tag.2.Key=overcast:cluster + ...Value=12."""
    found: set[str] = set()
    for key, values in params.items():
        if key.endswith(".Key") and values[:1] == [CLUSTER_TAG]:
            found.update(params.get(key[: -len("Key")] + "Value", []))
        elif key.endswith(".Name") and values[:1] == [f"tag:{CLUSTER_TAG}"]:
            prefix = key[: -len("Name")] + "Value."
            for other, vals in params.items():
                if other.startswith(prefix):
                    found.update(vals)
    return found


def ec2_error(code: str) -> tuple[int, bytes]:
    status, message = ERRORS[code]
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>")
    return status, body.encode()


def subnet_zone(subnet_id: str) -> str | None:
    """The zone of a subnet, found in-process in whichever account and region holds it."""
    from moto.ec2.models import ec2_backends

    for account in list(ec2_backends):
        for backend in list(ec2_backends[account].values()):
            for subnets in list(backend.subnets.values()):
                if subnet_id in subnets:
                    return subnets[subnet_id].availability_zone
    return None


class ControlMiddleware:
    def __init__(self, app: Any, faults: Faults, handlers: dict[str, Handler] | None = None):
        self.app = app
        self.faults = faults
        self.handlers = handlers or {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_overcast/"):
            return self._control(environ, start_response, path[len("/_overcast/"):].strip("/"))
        if environ.get("REQUEST_METHOD") == "POST" and self.faults.rules():
            body = self._body(environ)
            if b"Action=" in body:
                params = parse_qs(body.decode(errors="replace"))
                action = params.get("Action", [""])[0]
                zone = params.get("Placement.AvailabilityZone", [None])[0]
                if zone is None and params.get("SubnetId"):
                    zone = subnet_zone(params["SubnetId"][0])
                rule = self.faults.match(action, zone, params)
                if rule is not None:
                    status, err = ec2_error(rule.error)
                    start_response(f"{status} Error", [("Content-Type", "text/xml"),
                                                       ("Content-Length", str(len(err)))])
                    return [err]
        return self.app(environ, start_response)

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        """Read the request body and put it back for moto."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any],
                 name: str) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        raw = self._body(environ)
        try:
            data = json.loads(raw) if raw.strip() else {}
            if name == "faults" and method == "POST":
                status, out = 200, asdict(self.faults.add(FaultRule(**data)))
            elif name == "faults" and method == "GET":
                status, out = 200, [asdict(r) for r in self.faults.rules()]
            elif name == "faults" and method == "DELETE":
                self.faults.clear()
                status, out = 200, {"cleared": True}
            elif name in self.handlers and method == "POST":
                status, out = 200, self.handlers[name](data)
            else:
                status, out = 404, {"error": f"no control endpoint {method} /_overcast/{name}"}
        except (TypeError, ValueError, KeyError, LookupError) as exc:
            status, out = 400, {"error": str(exc)}
        payload = json.dumps(out).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload)))])
        return [payload]
