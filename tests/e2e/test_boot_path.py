"""Clusters boot from the overcast VM image, and only from it: every instance of a running cluster
has the AMI the image pipeline made (tagged, owned by the operator's account), its container
runs that AMI's image, and inside a worker there is no control-plane code or environment.

Read back through boto3 (EC2) and the container engine (docker SDK), as a user of AWS would."""

from __future__ import annotations

import sys

import docker
import pytest
from distributed import Client

import overcast
from overcast import tags
from overcast.localcloud.containers import LABEL_INSTANCE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
OPERATOR = "123456789012"


def test_cluster_instances_are_containers_of_the_pipeline_image(overcast_config, stack, aws):
    built = stack.images["us-east-1"]
    with overcast.Cluster(name="boot-path", n_workers=2, progress="none") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=90)
        found = aws("ec2").describe_instances(Filters=[
            {"Name": f"tag:{tags.CLUSTER}", "Values": [str(cluster.info["id"])]},
            {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
        instances = [i for r in found for i in r["Instances"]]
        assert len(instances) == 3  # scheduler + 2 workers
        assert {i["ImageId"] for i in instances} == {built}

        image = aws("ec2").describe_images(ImageIds=[built])["Images"][0]
        image_tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        assert image["OwnerId"] == OPERATOR and image["State"] == "available"
        assert image["Name"].startswith(f"overcast-agent-{overcast.__version__}-")
        assert image_tags[tags.MANAGED] == "true"
        assert image_tags["overcast:version"] == overcast.__version__

        engine = docker.from_env()
        try:
            for inst in instances:
                boxes = engine.containers.list(
                    filters={"label": f"{LABEL_INSTANCE}={inst['InstanceId']}"})
                assert len(boxes) == 1, inst["InstanceId"]
                assert f"overcast-localcloud/ami:{built}" in boxes[0].image.tags
        finally:
            engine.close()

        def inside() -> dict:  # nested: pickled by value (the VM has no tests package)
            import importlib.util
            import os
            import sys

            return {"server": importlib.util.find_spec("overcast.server") is not None,
                    "prefix": sys.prefix, "image": os.path.exists("/etc/overcast/image.json")}

        seen = client.run(inside)
        assert len(seen) == 2
        for where in seen.values():
            assert where == {"server": False, "prefix": "/opt/overcast/venv", "image": True}
            assert where["prefix"] != sys.prefix
