
"""moto in server mode, in this process, configured to behave like the AWS overcast expects.

In-process (ThreadedMotoServer) so the runner can read moto's backends directly instead of
polling over HTTP. Everything here must run before moto's EC2 models are imported, because
moto reads some settings at import time: call `configure()` first (start() does).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast import settings
from overcast.localcloud.motopatch import wrap_once

OPERATOR_ACCOUNT = "123456789012"  # moto's default account = the overcast operator
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def ami_document() -> list[dict[str, Any]]:
    """The AMI list moto loads into every (account, region) EC2 backend it creates.

    moto keeps AMIs per account and region and does not share public AMIs across accounts
    (measured: a public image of 123456789012 is invisible to, and cannot be launched by,
    another account). Its `MOTO_AMIS_PATH` list, however, is loaded into every backend on
    creation, so an image listed there behaves like a public image of the operator account.
    """
    from overcast.localcloud import stockimage

    return [stockimage.ami_document()]  # the stock Debian 12 AMI (containers.py)


def configure() -> None:
    """Set moto's environment before it is imported; re-apply to its settings if it was."""
    path = home_cache() / "amis.json"
    path.write_text(json.dumps(ami_document()))
    os.environ["MOTO_ENABLE_AMI_VALIDATION"] = "1"
    os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "1"
    os.environ["MOTO_AMIS_PATH"] = str(path)
    # werkzeug logs every request line at INFO: far too loud for a local cloud.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from moto import settings as moto_settings

    moto_settings.ENABLE_AMI_VALIDATION = True
    moto_settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    from moto.ec2.models import amis

    amis.AMIS = ami_document()  # read on each backend creation, so this wins over import order


class MotoServer:
    """moto's WSGI app on 127.0.0.1, optionally wrapped in a middleware (fault injection)."""

    def __init__(self, port: int = 4599, host: str = "127.0.0.1",
                 middleware: Callable[[WsgiApp], WsgiApp] | None = None) -> None:
        configure()
        from moto.server import ThreadedMotoServer

        outer = self

        class _Server(ThreadedMotoServer):
            def _server_entry(self) -> None:  # same as moto's, plus our middleware
                from moto.moto_server.werkzeug_app import (
                    DomainDispatcherApplication,
                    MotoRequestHandler,
                    create_backend_app,
                )
                from werkzeug.serving import make_server

                app: WsgiApp = DomainDispatcherApplication(create_backend_app)
                if outer.middleware is not None:
                    app = outer.middleware(app)
                self._server = make_server(self._ip_address, self._port, app, True,
                                           request_handler=MotoRequestHandler)
                self._server_ready_event.set()
                self._server.serve_forever()

        self.middleware = middleware
        self._server = _Server(ip_address=host, port=port, verbose=False)

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        self._server.stop()


def set_enforce_iam(enabled: bool) -> None:
    """Turn moto's IAM checking on or off (same as POST /moto-api/reset-auth with 0 / inf)."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enabled else float("inf")
    ActionAuthenticatorMixin.request_count = 0


def allow_anonymous_public_reads() -> None:
    """Let unsigned S3 reads of public-read objects/buckets through while IAM is enforced.

    moto answers every unsigned request with HTTP 500 while checking is on. AWS instead
    treats it as the anonymous principal: allowed where an ACL grants AllUsers READ,
    AccessDenied elsewhere. Patching moto's S3 check keeps one server (one S3 namespace),
    so `storage_options={"anon": True}` reads of nyc-tlc work in either mode.
    """
    from moto.s3.exceptions import S3AccessDeniedError
    from moto.s3.responses import S3Response

    def build(original: Any) -> Any:
        def check(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
            from moto import settings as moto_settings
            from moto.core.authorization import ActionAuthenticatorMixin

            enforced = (ActionAuthenticatorMixin.request_count
                        >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT)
            signed = ("Authorization" in self.headers
                      or "X-Amz-Signature" in (self.querystring or {}))
            if not enforced or signed:
                return original(self, bucket_name=bucket_name, key_name=key_name)
            if self.method in ("GET", "HEAD") and bucket_name and _public(bucket_name, key_name):
                return None
            raise S3AccessDeniedError()
        return check

    wrap_once(S3Response, "_authenticate_and_authorize_s3_action", build)


def _public(bucket_name: str, key_name: str | None) -> bool:
    from moto.s3.models import s3_backends

    for account in list(s3_backends):
        try:
            bucket = s3_backends[account]["aws"].buckets.get(bucket_name)
        except KeyError:
            continue
        if bucket is None:
            continue
        if key_name:
            key = bucket.keys.get(key_name)
            return bool(key is not None and key.acl is not None and key.acl.public_read)
        return bool(bucket.acl is not None and bucket.acl.public_read)
    return False


def home_cache() -> Path:
    path = settings.home() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
