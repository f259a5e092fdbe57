"""motospeed: the AMI look-up by id answers what moto's filter answered."""

from __future__ import annotations

import pytest
from moto import mock_aws

from overcast.localcloud import motospeed

pytestmark = pytest.mark.timeout(60)


@mock_aws
def test_ami_lookup_by_id_matches_the_filter():
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
