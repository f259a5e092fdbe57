"""`overcast image build` end to end against in-process moto: the API asks, the reconciler's
ImageMachine resolves the stock Debian 12 AMI through SSM, launches a tagged builder whose user
data runs the bootstrap script, waits for its one-time report, CreateImage, keeps the newest
two, terminates the builder; failures quote the builder's console; clusters resolve the AMI."""

from __future__ import annotations

import base64

import boto3
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from overcast import tags
from overcast.backends.aws import images as aws_images
from overcast.backends.aws.session import context
from overcast.reconciler import images
from overcast.reconciler.contexts import ContextFactory, Target
from overcast.reconciler.infra import InfraCache
from overcast.server.app import create_app
from overcast.store.models import Image, Notification
from tests.unit.backend_fixtures import account, database

pytestmark = pytest.mark.timeout(120)
PUBLIC = "https://overcast.example.com"
PARAM = "/test/debian/release/12/latest/amd64"  # /aws/... names are AWS's own (moto refuses)


@pytest.fixture
def world(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(aws_images, "DEBIAN_12_PARAMETER", PARAM)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    stock = ec2.describe_images()["Images"][0]["ImageId"]
    boto3.client("ssm", region_name="us-east-1").put_parameter(Name=PARAM, Value=stock,
                                                              Type="String")
    db, slug, token = database(tmp_path, monkeypatch)
    client = TestClient(create_app(db, run_reconciler=False))
    client.headers["Authorization"] = f"Bearer {token}"
    machine = images.ImageMachine(ContextFactory(), InfraCache(), PUBLIC, poll_interval=0)
    return {"db": db, "slug": slug, "api": client, "machine": machine, "ec2": ec2,
            "stock": stock}


def _row(world, image_id: int) -> Image:
    with world["db"].session() as session:
        row = session.get(Image, image_id)
        session.expunge(row)
        return row


def _build_token(world, builder: str) -> str:
    data = world["ec2"].describe_instance_attribute(InstanceId=builder, Attribute="userData")
    doc = yaml.safe_load(base64.b64decode(data["UserData"]["Value"]))
    env = next(f["content"] for f in doc["write_files"] if f["path"].endswith("build.env"))
    return dict(line.split("=", 1) for line in env.split())["OVERCAST_BUILD_TOKEN"].strip("'")


def _start(world) -> int:
    res = world["api"].post(f"/api/v1/accounts/{world['slug']}/images", json={})
    assert res.status_code == 202, res.text
    assert res.json()["state"] == "pending" and res.json()["scope"] == "hosted"
    world["machine"].run_pass(world["db"])
    return res.json()["id"]


def _report(world, image_id: int, token: str, **body) -> int:
    return world["api"].post(f"/api/v1/images/builds/{image_id}/report", json=body,
                             headers={"Authorization": f"Bearer {token}"}).status_code


def _build(world) -> Image:
    image_id = _start(world)
    row = _row(world, image_id)
    assert _report(world, image_id, _build_token(world, row.builder_id), ok=True) == 204
    world["machine"].run_pass(world["db"])  # CreateImage
    world["machine"].run_pass(world["db"])  # available (moto makes images available at once)
    return _row(world, image_id)


def test_a_build_from_request_to_available_image(world):
    image_id = _start(world)
    row = _row(world, image_id)
    assert (row.state, row.source_image) == ("building", world["stock"])
    builder = world["ec2"].describe_instances(InstanceIds=[row.builder_id])
    inst = builder["Reservations"][0]["Instances"][0]
    assert inst["ImageId"] == world["stock"]
    itags = tags.from_aws(inst["Tags"])
    assert itags[tags.MANAGED] == "true" and itags[tags.ACCOUNT] == tags.OPERATOR
    assert itags[tags.ROLE] == "image-builder" and itags["overcast:version"] == row.version
    # The user data is a cloud-config running the repo's bootstrap script.
    raw = world["ec2"].describe_instance_attribute(InstanceId=row.builder_id,
                                                  Attribute="userData")
    doc = yaml.safe_load(base64.b64decode(raw["UserData"]["Value"]))
    script = next(f for f in doc["write_files"] if f["path"] == "/opt/overcast/bootstrap.sh")
    assert script["content"] == images.BOOTSTRAP.read_text()
    token = _build_token(world, row.builder_id)
    # The token is never shown, a wrong one is refused, the right one works once.
    listed = world["api"].get(f"/api/v1/accounts/{world['slug']}/images").text
    assert token not in listed
    assert _report(world, image_id, "wrong", ok=True) == 404
    assert _report(world, image_id, token, ok=True) == 204
    assert _report(world, image_id, token, ok=True) == 404
    world["machine"].run_pass(world["db"])
    row = _row(world, image_id)
    assert row.state == "creating" and row.name.startswith(f"overcast-agent-{row.version}-")
    world["machine"].run_pass(world["db"])
    row = _row(world, image_id)
    assert row.state == "available"
    ami = world["ec2"].describe_images(ImageIds=[row.aws_id])["Images"][0]
    assert tags.from_aws(ami["Tags"])[tags.ACCOUNT] == tags.OPERATOR
    state = world["ec2"].describe_instances(InstanceIds=[row.builder_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    listed = world["api"].get(f"/api/v1/accounts/{world['slug']}/images").json()
    assert [(i["state"], i["image_id"]) for i in listed] == [("available", row.aws_id)]
    # A hosted cluster of this region now launches from it (the fallback is not asked).
    with world["db"].session() as session:
        target = Target(context("us-east-1"), tags.OPERATOR, True)
        assert images.resolve(session, account(session, world["slug"]), target,
                              fallback=lambda: pytest.fail("fallback used")) == row.aws_id


def test_newest_two_images_are_kept(world):
    built = [_build(world)]
    first = world["ec2"].describe_images(ImageIds=[built[0].aws_id])["Images"][0]
    first_snaps = {m["Ebs"]["SnapshotId"] for m in first["BlockDeviceMappings"] if "Ebs" in m}
    built += [_build(world) for _ in range(2)]
    assert [b.state for b in built] == ["available"] * 3
    mine = world["ec2"].describe_images(Owners=["self"], Filters=tags.filters(
        tags.resource_tags(tags.OPERATOR)))["Images"]
    assert {i["ImageId"] for i in mine} == {built[1].aws_id, built[2].aws_id}
    assert _row(world, built[0].id).state == "deregistered"
    snaps = {s["SnapshotId"] for s in world["ec2"].describe_snapshots(
        OwnerIds=["self"])["Snapshots"]}
    assert first_snaps and not first_snaps & snaps


def test_a_failed_bootstrap_ends_in_error_with_the_console(world):
    image_id = _start(world)
    row = _row(world, image_id)
    token = _build_token(world, row.builder_id)
    assert _report(world, image_id, token, ok=False, reason="pip install failed") == 204
    world["machine"].run_pass(world["db"])
    row = _row(world, image_id)
    assert row.state == "error" and "pip install failed" in row.reason
    assert "Last console lines of the builder" in row.reason
    assert row.aws_id is None
    state = world["ec2"].describe_instances(InstanceIds=[row.builder_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    with world["db"].session() as session:
        errors = session.scalars(select(Notification).where(
            Notification.event_type == "image-build-failed")).all()
        assert len(errors) == 1 and errors[0].level == "error"
        # A cluster now fails with that reason instead of waiting for an image forever.
        target = Target(context("us-east-1"), tags.OPERATOR, True)

        def no_legacy() -> str:
            raise aws_images.AwsError("no legacy image")

        with pytest.raises(aws_images.AwsError, match="overcast image build"):
            images.resolve(session, account(session, world["slug"]), target, no_legacy)


def test_a_cluster_without_an_image_asks_for_one_and_waits(world):
    with world["db"].session() as session:
        target = Target(context("us-east-1"), tags.OPERATOR, True)

        def no_legacy() -> str:
            raise aws_images.AwsError("no legacy image")

        acct = account(session, world["slug"])
        for _ in range(2):  # asking twice makes one build
            with pytest.raises(images.WaitingForImage):
                images.resolve(session, acct, target, no_legacy)
        assert len(session.scalars(select(Image)).all()) == 1


def test_a_loopback_public_url_is_refused_for_aws(world):
    world["machine"].control_plane = "http://127.0.0.1:8600"
    image_id = _start(world)
    row = _row(world, image_id)
    assert row.state == "error" and "--public-url" in row.reason and row.builder_id is None


def test_bad_region_is_400_and_members_only(world):
    res = world["api"].post(f"/api/v1/accounts/{world['slug']}/images",
                            json={"region": "mars-1"})
    assert res.status_code == 400 and "region" in res.json()["detail"].lower()
    assert world["api"].post("/api/v1/accounts/nobody/images", json={}).status_code == 404
    with world["db"].session() as session:
        assert session.scalars(select(Image)).all() == []


def test_a_failed_boot_quotes_the_console(ctx):
    from overcast.reconciler.console import with_console

    ec2 = ctx.client("ec2")
    stock = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=stock, MinCount=1, MaxCount=1,
                            InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    target = Target(ctx, tags.OPERATOR, True)
    reason = with_console(target, iid, "its agent did not report within 180 s of launch")
    console = aws_images.console_output(ctx, iid)
    assert console and reason.startswith("its agent did not report") and console in reason
    assert with_console(target, None, "gone") == "gone"
    assert with_console(target, "i-0123456789abcdef0", "gone") == "gone"  # no console: as is


def test_only_site_admins_build_the_shared_hosted_image(world):
    from overcast.server.auth import issue_token
    from overcast.server.bootstrap import create_user

    with world["db"].session() as session:
        bob = create_user(session, "bob")
        token = issue_token(session, bob)
        session.commit()
    res = world["api"].post("/api/v1/accounts/bob/images", json={},
                            headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 403 and "site admin" in res.json()["detail"]
    assert world["api"].get("/api/v1/accounts/bob/images",
                            headers={"Authorization": f"Bearer {token}"}).json() == []
