"""An AMI deregistered behind overcast's back (or a cloud that was reset): the launch's
InvalidAMIID.NotFound retires the image row and requests a new build; the cluster waits for it
instead of ending in error."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from overcast.backends.aws.errors import AwsError
from overcast.store.models import Image

pytestmark = pytest.mark.timeout(120)


def test_a_gone_ami_is_built_again_and_the_cluster_waits(world):
    world.fake.inject("launch", lambda: AwsError(
        "AWS RunInstances failed: InvalidAMIID.NotFound: The image id '[ami]' does not exist",
        code="InvalidAMIID.NotFound"), times=1)
    cid = world.create("c", 1)
    world.run(10)
    assert world.cluster(cid)["state"] in ("pending", "starting")
    with world.db.session() as s:
        rows = s.scalars(select(Image).where(Image.aws_id == "ami",
                                             Image.region == "us-east-1")).all()
        assert {r.state for r in rows} >= {"deregistered"}
        assert s.scalar(select(Image).where(Image.state.in_(("pending", "building"))))
    notes = [n.message for n in world.notifications(cid)]
    assert any("is gone from AWS (InvalidAMIID.NotFound); building it again" in m
               for m in notes), notes
