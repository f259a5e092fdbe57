"""moto made to act like EC2 and SSM where AMIs are container images (see containers.py).

- SSM: Debian's public parameters (`/aws/service/debian/release/12/latest/amd64`, and the
  `bookworm` alias) name the stock Debian 12 AMI in every account and region, as on AWS.
- CreateImage of a container instance: the AMI is `pending` while the container is committed,
  then `available` (or `failed`), as on AWS; snapshot TagSpecifications are accepted (moto
  raises NotImplementedError) and tag the AMI's snapshot.
- DeregisterImage: the container image goes too (when no instance uses it).
- GetConsoleOutput: what the instance's container printed (base64, as EC2), not moto's sample.

`install(containers)` points the patches at the running local cloud's containers (one local
cloud per process); the patches themselves are applied once.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from typing import Any

from overcast.localcloud import stockimage
from overcast.localcloud.motopatch import wrap_once

_containers: Any = None


def install(containers: Any) -> None:
    global _containers
    _containers = containers
    _ssm_debian_parameters()
    _create_image()
    _deregister_image()
    _console_output()


def _wants_debian(key: str) -> bool:
    prefix = "/aws/service/debian"
    return key.startswith(prefix) or (key.startswith("/aws/service")
                                      and prefix.startswith(key.rstrip("/")))


def _ssm_debian_parameters() -> None:
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ParameterDict

    def build(original: Any) -> Any:
        def check(self: Any, key: str) -> None:
            original(self, key)
            if getattr(self, "_overcast_debian", False) or not _wants_debian(str(key or "")):
                return
            self._overcast_debian = True
            for name in stockimage.SSM_PARAMETERS:
                defaultdict.__getitem__(self, name).append(Parameter(
                    account_id=self.account_id, name=name, value=stockimage.ami_id(),
                    parameter_type="String", description=None, allowed_pattern=None, keyid=None,
                    last_modified_date=utcnow(), version=1, data_type="aws:ec2:image"))
        return check

    wrap_once(ParameterDict, "_check_loading_status", build)


def _create_image() -> None:
    from moto.ec2.models.amis import AmiBackend

    def build(original: Any) -> Any:
        def create_image(self: Any, instance_id: str, name: str, description: str,
                         tag_specifications: list[dict[str, Any]]) -> Any:
            snapshot_tags = [t for spec in tag_specifications
                             if spec.get("ResourceType") == "snapshot"
                             for t in spec.get("Tags", [])]
            others = [s for s in tag_specifications if s.get("ResourceType") != "snapshot"]
            ami = original(self, instance_id, name, description, others)
            for tag in snapshot_tags:
                ami.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
            if _containers is not None and _containers.can_commit(instance_id):
                _containers.commit(instance_id, ami)
            return ami
        return create_image

    wrap_once(AmiBackend, "create_image", build)


def _deregister_image() -> None:
    from moto.ec2.models.amis import AmiBackend

    def build(original: Any) -> Any:
        def deregister_image(self: Any, ami_id: str) -> None:
            original(self, ami_id)
            if _containers is not None and ami_id != stockimage.ami_id():
                _containers.forget_image(ami_id)
        return deregister_image

    wrap_once(AmiBackend, "deregister_image", build)


def _console_output() -> None:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString

    def build(original: Any) -> Any:
        def get_console_output(self: Any) -> Any:
            instance_id = self._get_param("InstanceId")
            instance = self.ec2_backend.get_instance(instance_id)  # InvalidInstanceID.NotFound
            output = _containers.console(instance.id) if _containers is not None else None
            if output is None:
                return original(self)
            result: dict[str, Any] = {"InstanceId": instance.id, "Timestamp": utcnow()}
            if output:  # EC2 leaves Output out when the instance printed nothing
                result["Output"] = Base64EncodedString(base64.b64encode(output).decode("ascii"))
            return ActionResult(result)
        return get_console_output

    wrap_once(General, "get_console_output", build)
