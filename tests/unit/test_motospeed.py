"""motospeed: the AMI look-up by id answers what moto's filter answered."""

from __future__ import annotations

import pytest

from overcast.localcloud import motospeed

pytestmark = pytest.mark.timeout(60)


def test_ami_lookup_by_id_matches_the_filter(aws):
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import AmiBackend

    backend = ec2_backends["123456789012"]["us-east-1"]
    ami_id = next(iter(backend.amis))
    before = [a.id for a in backend.describe_images(filters={"image-id": ami_id})]
    motospeed.apply()
    motospeed.apply()  # idempotent: one wrapper
    assert AmiBackend.describe_images._overcast
    assert [a.id for a in backend.describe_images(filters={"image-id": ami_id})] == before
    assert before == [ami_id]
    assert backend.describe_images(filters={"image-id": "ami-00000000000000000"}) == []
    # Other look-ups take moto's own path.
    assert [a.id for a in backend.describe_images(ami_ids=[ami_id])] == [ami_id]
    owned = backend.describe_images(filters={"image-id": ami_id}, owners=["self"])
    assert owned == []


def test_a_resources_tags_match_moto_s_own_and_tag_filters_still_work(aws):
    import boto3
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.core import TaggedEC2Resource

    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "cluster", "Value": "7"}, {"Key": "role", "Value": "worker"}]
    for value in ("7", "8"):
        ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{**tags[0], "Value": value}, tags[1]]}])
    backend = ec2_backends["123456789012"]["us-east-1"]
    instances = [i for r in backend.reservations.values() for i in r.instances]
    before = [i.get_tags() for i in instances]
    motospeed.apply()
    motospeed.apply()
    assert TaggedEC2Resource.get_tags._overcast
    assert [i.get_tags() for i in instances] == before
    found = ec2.describe_instances(Filters=[{"Name": "tag:cluster", "Values": ["7"]}])
    assert sum(len(r["Instances"]) for r in found["Reservations"]) == 2
