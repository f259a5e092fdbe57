"""Clusters in the customer's own AWS account, on a local cloud with IAM enforced.

One story, in order (each test builds on the previous ones): refusals store nothing; setup
with setup + ongoing; the setup policy detached, clusters still start, compute, scale, show logs
and stop; a zone without subnet fails cleanly; teardown; the recorded AWS actions are within
the policies; role mode; reset to the hosted default; and no secret anywhere.
"""

from __future__ import annotations

import copy
import json
import time

import boto3
import dask
import httpx
import pytest
from click.testing import CliRunner
from distributed import Client

import overcast
from overcast import tags
from overcast.backends.aws import policies
from overcast.cli.main import cli
from overcast.client.errors import ApiError
from overcast.server.auth import issue_token
from overcast.server.bootstrap import create_user
from overcast.store.db import Database
from overcast.store.models import Account, Base
from tests.e2e.helpers import environ

pytestmark = [pytest.mark.e2e, pytest.mark.stores("sqlite", "postgresql")]
REGION = "us-east-1"
OPERATOR = "123456789012"
STATE: dict = {"texts": [], "secrets": []}  # shared along the story


@pytest.fixture(scope="module")
def iam_stack(stack):
    """The shared stack (its local cloud enforces IAM, its control plane records the AWS actions
    it makes; SQLite or PostgreSQL, the module runs once per store), seen as a new user "owner"
    whose account this story configures: the other tests' account keeps the hosted default."""
    # The last test reads this recording: a module before this one must not have left the
    # control plane running without it (or recording elsewhere).
    assert stack.server_env.get("OVERCAST_RECORD_AWS_ACTIONS") == str(stack.record), \
        stack.server_env.get("OVERCAST_RECORD_AWS_ACTIONS")
    STATE.clear()  # the story starts over on each store
    STATE.update(texts=[], secrets=[])
    db = Database(stack.database_url)
    with db.session() as session:
        user = create_user(session, "owner")
        slug = session.get(Account, user.default_account_id).slug
        token = issue_token(session, user, name="own-account")
        session.commit()
    db.engine.dispose()
    mine = copy.copy(stack)
    mine.account, mine.token = slug, token
    with environ(AWS_ENDPOINT_URL=stack.endpoint), \
            dask.config.set({"overcast.server": stack.url, "overcast.token": token,
                             "overcast.account": slug}):
        yield mine


def new_account(stack, drop: tuple[str, ...] = ()) -> dict:
    """A new simulated AWS account: user "overcast" with the policies (minus `drop`) + admin."""
    docs = {n: policies.load(n) for n in policies.NAMES}
    for doc in docs.values():
        for statement in doc["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a not in drop]
        doc["Statement"] = [s for s in doc["Statement"] if s["Action"]]
    body = {"setup_policy": docs["setup"], "ongoing_policy": docs["ongoing"], "admin": True}
    acct = httpx.post(f"{stack.endpoint}/_overcast/accounts", json=body, timeout=30).json()
    STATE["secrets"] += [acct["secret_access_key"]]
    return acct


def admin(acct: dict, service: str):
    return boto3.client(service, region_name=REGION, aws_access_key_id=acct[
        "admin_access_key_id"], aws_secret_access_key=acct["admin_secret_access_key"])


def operator(stack, service: str):
    keys = json.loads((stack.home / "run" / "localcloud-operator.json").read_text())
    return boto3.client(service, region_name=REGION, aws_access_key_id=keys["access_key_id"],
                        aws_secret_access_key=keys["secret_access_key"])


def keys(acct: dict) -> dict[str, str]:
    return {"aws_access_key_id": acct["access_key_id"],
            "aws_secret_access_key": acct["secret_access_key"]}


def api(stack, method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, f"{stack.url}/api/v1{path}", timeout=60,
                             headers={"Authorization": f"Bearer {stack.token}"}, **kwargs)
    STATE["texts"].append(response.text)
    return response


def tagged_instances(ec2, cluster_id: int) -> list[dict]:
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{tags.CLUSTER}",
                                             "Values": [str(cluster_id)]}])["Reservations"]
    return [i for r in found for i in r["Instances"]]


def setup_policy_arn(acct: dict) -> str:
    return f"arn:aws:iam::{acct['account_id']}:policy/overcast-setup"


@pytest.mark.timeout(720)  # backend setup builds the image in that account
def test_bad_credentials_are_refused_and_nothing_is_stored(iam_stack):
    good, lacking = new_account(iam_stack), new_account(iam_stack, drop=("ec2:RunInstances",
                                                                          "iam:CreateRole"))
    STATE["account"] = good
    cases = [
        ({"aws_access_key_id": "ASIA" + good["access_key_id"][4:],
          "aws_secret_access_key": good["secret_access_key"]}, "temporary"),
        ({**keys(good), "aws_session_token": "FwoGZXIvYXdzE"}, "session token"),
        ({"aws_access_key_id": good["access_key_id"],
          "aws_secret_access_key": good["secret_access_key"][:-2] + "xx"},
         "does not accept these credentials"),
        (keys(lacking), "from the setup policy: iam:CreateRole; from the ongoing policy: "
                        "ec2:RunInstances"),
        ({"aws_access_key_id": good["access_key_id"]}, "aws_secret_access_key is missing"),
    ]
    for params, expected in cases:
        with pytest.raises(ApiError) as info:
            overcast.set_backend_options(**params)
        STATE["texts"].append(str(info.value))
        assert expected in str(info.value)
        doc = overcast.get_backend_options()
        assert (doc["kind"], doc["aws_access_key_id"], doc["resources"]) == \
            ("hosted", None, [])
    events = {n["event_type"] for n in overcast.get_notifications(json=True)}
    assert "backend-configured" not in events


@pytest.mark.timeout(720)  # backend setup builds the image in that account
def test_setup_creates_resources_in_the_customer_account_only(iam_stack):
    acct, slug = STATE["account"], iam_stack.account
    STATE["t_setup"] = time.time()
    doc = overcast.set_backend_options(**keys(acct), wait=True, timeout=600)
    STATE["t_setup_done"] = time.time()
    assert (doc["kind"], doc["state"], doc["credentials"]) == ("aws", "ready", "keys")
    assert doc["aws_access_key_id"] == "*" * 16 + acct["access_key_id"][-4:]
    kinds = {r["kind"] for r in doc["resources"]}
    assert kinds >= {"vpc", "internet-gateway", "route-table", "subnet-public",
                     "subnet-private", "elastic-ip", "nat-gateway", "iam-role",
                     "instance-profile", "log-group", "ecr-repository"}
    assert all(r["state"] == "created" for r in doc["resources"])
    mine = [{"Name": f"tag:{tags.ACCOUNT}", "Values": [slug]}]
    assert len(admin(acct, "ec2").describe_vpcs(Filters=mine)["Vpcs"]) == 1
    assert admin(acct, "iam").get_role(RoleName=slug)["Role"]["RoleName"] == slug
    group = admin(acct, "logs").describe_log_groups(logGroupNamePrefix=slug)["logGroups"][0]
    assert group["retentionInDays"] == 30
    assert operator(iam_stack, "ec2").describe_vpcs(Filters=mine)["Vpcs"] == []
    with pytest.raises(operator(iam_stack, "iam").exceptions.NoSuchEntityException):
        operator(iam_stack, "iam").get_role(RoleName=slug)
    events = [n["event_type"] for n in overcast.get_notifications(json=True, limit=500)]
    assert {"backend-ready", "resource-vpc", "resource-nat-gateway"} <= set(events)
    # Setup again: everything is found, nothing new is made.
    again = overcast.set_backend_options(**keys(acct), wait=True, timeout=600)
    assert {r["aws_id"] for r in again["resources"]} == {r["aws_id"] for r in doc["resources"]}
    assert all(r["state"] == "found" for r in again["resources"])
    STATE["t_setup_done"] = time.time()


@pytest.mark.timeout(300)
def test_ongoing_policy_alone_runs_clusters(iam_stack):
    acct = STATE["account"]
    admin(acct, "iam").detach_user_policy(UserName="overcast",
                                          PolicyArn=setup_policy_arn(acct))
    STATE["t_cluster"] = time.time()
    with overcast.Cluster(name="own-1", n_workers=1) as cluster, Client(cluster) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        cluster.scale(2)
        client.wait_for_workers(2, timeout=90)
        assert sum(client.gather(client.map(lambda x: x * 2, range(10)))) == 90
        info = api(iam_stack, "GET", f"/accounts/{iam_stack.account}/clusters/own-1").json()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # agents ship logs with the instance role's creds
            logs = overcast.get_logs("own-1")
            if logs and all(logs.values()):
                break
            time.sleep(1)
        assert len(logs) == 3 and all(logs.values()), logs.keys()
    final = api(iam_stack, "GET", f"/accounts/{iam_stack.account}/clusters/own-1").json()
    assert final["state"] == "stopped", final["reason"]
    STATE["t_cluster_done"] = time.time()
    theirs = tagged_instances(admin(acct, "ec2"), info["id"])
    assert len(theirs) == 3 and {i["State"]["Name"] for i in theirs} == {"terminated"}
    assert tagged_instances(operator(iam_stack, "ec2"), info["id"]) == []


@pytest.mark.timeout(180)
def test_zone_without_subnet_fails_with_the_reason_and_leaves_nothing(iam_stack):
    acct, slug, zone = STATE["account"], iam_stack.account, f"{REGION}c"
    ec2 = admin(acct, "ec2")
    for subnet in ec2.describe_subnets(Filters=[
            {"Name": f"tag:{tags.ACCOUNT}", "Values": [slug]},
            {"Name": "availability-zone", "Values": [zone]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    r = api(iam_stack, "POST", f"/accounts/{slug}/clusters",
            json={"name": "own-zone", "n_workers": 1, "backend_options": {"zone": zone}})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = api(iam_stack, "GET", f"/accounts/{slug}/clusters/own-zone").json()
        if info["state"] in ("stopped", "error"):
            break
        time.sleep(0.5)
    assert info["state"] == "error"
    assert f"Zone {zone} has no overcast subnet yet, and it cannot be created without the " \
           "setup permissions" in info["reason"]
    assert "ec2:CreateSubnet" in info["reason"]
    assert tagged_instances(ec2, info["id"]) == []
    assert ec2.describe_security_groups(Filters=[{"Name": f"tag:{tags.CLUSTER}",
                                                  "Values": [str(info["id"])]}])[
        "SecurityGroups"] == []
    STATE["t_zone_done"] = time.time()


@pytest.mark.timeout(240)
def test_teardown_removes_everything_one_by_one(iam_stack):
    acct, slug = STATE["account"], iam_stack.account
    admin(acct, "iam").attach_user_policy(UserName="overcast",
                                          PolicyArn=setup_policy_arn(acct))
    mine = [{"Name": f"tag:{tags.ACCOUNT}", "Values": [slug]}]
    ec2 = admin(acct, "ec2")
    built = ec2.describe_images(Owners=["self"], Filters=mine)["Images"]
    snapshots = {m["Ebs"]["SnapshotId"] for i in built for m in i["BlockDeviceMappings"]
                 if "Ebs" in m}
    assert built and snapshots  # the image backend setup built in the account
    STATE["t_teardown"] = time.time()
    result = CliRunner().invoke(cli, ["setup", "aws", "--teardown"], catch_exceptions=False)
    STATE["t_teardown_done"] = time.time()
    STATE["texts"].append(result.output)
    assert result.exit_code == 0, result.output
    # one line per resource: "<kind> <id> in <where>: <state>"
    lines = [line.split() for line in result.output.splitlines()]
    deleted = {parts[0] for parts in lines if parts and parts[-1] == "deleted"}
    assert {"vpc", "nat-gateway", "iam-role", "instance-profile", "log-group",
            "ecr-repository", "subnet-public", "subnet-private", "image", "snapshot"
            } <= deleted, result.output
    # The overcast AMI setup built in the account is deregistered, its snapshots deleted.
    assert ec2.describe_images(Owners=["self"], Filters=mine)["Images"] == []
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not snapshots & left
    assert ec2.describe_vpcs(Filters=mine)["Vpcs"] == []
    assert ec2.describe_subnets(Filters=mine)["Subnets"] == []
    assert admin(acct, "iam").list_roles()["Roles"] == []
    assert admin(acct, "logs").describe_log_groups(logGroupNamePrefix=slug)["logGroups"] == []
    assert overcast.get_backend_options()["kind"] == "hosted"


@pytest.mark.timeout(720)  # backend setup builds the image in that account
def test_a_same_named_log_group_is_neither_adopted_nor_deleted(iam_stack):
    """A log group that merely has the slug's name is not overcast's: setup refuses to adopt
    it (a clear error) and teardown leaves it where it is."""
    acct, slug = STATE["account"], iam_stack.account
    logs = admin(acct, "logs")
    logs.create_log_group(logGroupName=slug, tags={"team": "theirs"})
    logs.put_retention_policy(logGroupName=slug, retentionInDays=7)
    try:
        with pytest.raises(overcast.OvercastError) as info:
            overcast.set_backend_options(**keys(acct), wait=True, timeout=600)
        STATE["texts"].append(str(info.value))
        assert f"log group named '{slug}' already exists and was not created by this " \
               "overcast control plane" in str(info.value)
        result = CliRunner().invoke(cli, ["setup", "aws", "--teardown"], catch_exceptions=False)
        STATE["texts"].append(result.output)
        assert result.exit_code == 0, result.output
        group = logs.describe_log_groups(logGroupNamePrefix=slug)["logGroups"]
        assert [(g["logGroupName"], g.get("retentionInDays")) for g in group] == [(slug, 7)]
        assert "log-group" not in {line.split()[0] for line in result.output.splitlines()
                                   if line.strip() and line.split()[-1] == "deleted"}
        assert overcast.get_backend_options()["kind"] == "hosted"
    finally:
        logs.delete_log_group(logGroupName=slug)


@pytest.mark.timeout(60)
def test_recorded_actions_are_exactly_what_the_policies_allow(iam_stack):
    lines = [json.loads(x) for x in iam_stack.record.read_text().splitlines()]
    slug, free = iam_stack.account, {"sts:GetCallerIdentity"}

    def actions(scope: str, start: float, end: float) -> set[str]:
        return {x["action"] for x in lines if x["scope"] == scope and start <= x["t"] <= end}

    probes = actions("probe", 0, time.time())
    setup = actions(slug, STATE["t_setup"], STATE["t_setup_done"])
    cluster = actions(slug, STATE["t_cluster"], STATE["t_cluster_done"])
    # The zone test tries (and is refused) the one setup action a cluster may attempt.
    zone = actions(slug, STATE["t_cluster_done"], STATE["t_zone_done"])
    teardown = actions(slug, STATE["t_teardown"], STATE["t_teardown_done"])
    assert probes <= policies.all_actions() | free
    assert setup and setup <= policies.all_actions() | free
    assert cluster and cluster <= policies.actions("ongoing") | free, \
        cluster - policies.actions("ongoing")
    assert zone <= policies.actions("ongoing") | free | {"ec2:CreateSubnet"}
    assert "ec2:CreateSubnet" in zone
    assert teardown <= policies.all_actions() | free
    used = setup | cluster | teardown
    unused = policies.all_actions() - policies.IMPLIED - used
    readme = (policies._DIR / "README.md").read_text()
    assert all(a in readme for a in unused), unused
    STATE["figures"] = {"recorded lines": len(lines), "probes": len(probes),
                        "setup": len(setup),
                        "cluster": len(cluster), "teardown": len(teardown),
                        "unused": sorted(unused)}
    print("recorded AWS actions:", STATE["figures"])


@pytest.mark.timeout(720)  # backend setup builds the image in that account
def test_role_mode_then_reset_to_the_hosted_default(iam_stack):
    acct, slug = new_account(iam_stack), iam_stack.account
    env = {"AWS_ACCESS_KEY_ID": acct["admin_access_key_id"],  # the user's "local profile"
           "AWS_SECRET_ACCESS_KEY": acct["admin_secret_access_key"]}
    result = CliRunner(env=env).invoke(cli, ["setup", "aws", "--role"], catch_exceptions=False)
    STATE["texts"].append(result.output)
    assert result.exit_code == 0, result.output
    doc = overcast.get_backend_options()
    assert (doc["kind"], doc["state"], doc["credentials"]) == ("aws", "ready", "role")
    assert doc["role_arn"] == f"arn:aws:iam::{acct['account_id']}:role/overcast-access-{slug}"
    trust = admin(acct, "iam").get_role(RoleName=f"overcast-access-{slug}")["Role"][
        "AssumeRolePolicyDocument"]
    statement = trust["Statement"][0]
    assert statement["Principal"]["AWS"] == f"arn:aws:iam::{OPERATOR}:root"
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"].startswith("overcast-")
    with overcast.Cluster(name="own-role", n_workers=1) as cluster, Client(cluster) as client:
        assert client.submit(sum, [4, 5]).result() == 9
        info = api(iam_stack, "GET", f"/accounts/{slug}/clusters/own-role").json()
    assert len(tagged_instances(admin(acct, "ec2"), info["id"])) == 2

    result = CliRunner().invoke(cli, ["setup", "hosted"], catch_exceptions=False)
    assert result.exit_code == 0 and "hosted" in result.output
    with overcast.Cluster(name="hosted-again", n_workers=1) as cluster, \
            Client(cluster) as client:
        assert client.submit(sum, [1, 1]).result() == 2
        info = api(iam_stack, "GET", f"/accounts/{slug}/clusters/hosted-again").json()
    assert len(tagged_instances(operator(iam_stack, "ec2"), info["id"])) == 2
    assert tagged_instances(admin(acct, "ec2"), info["id"]) == []
    # Reset leaves the customer's resources alone.
    assert admin(acct, "iam").get_role(RoleName=slug)["Role"]["RoleName"] == slug


@pytest.mark.timeout(120)
def test_no_secret_anywhere(iam_stack):
    slug = iam_stack.account
    texts = list(STATE["texts"])
    texts.append(api(iam_stack, "GET", f"/accounts/{slug}/notifications?limit=1000").text)
    texts.append(api(iam_stack, "GET", f"/accounts/{slug}/backend").text)
    texts.append(api(iam_stack, "GET", f"/accounts/{slug}/clusters").text)
    for name in ("own-1", "own-zone", "own-role", "hosted-again"):
        texts.append(api(iam_stack, "GET", f"/accounts/{slug}/clusters/{name}").text)
        texts.append(api(iam_stack, "GET", f"/accounts/{slug}/clusters/{name}/logs").text)
    logs = [iam_stack.server.log_path, iam_stack.cloud.log_path, iam_stack.record,
            *(iam_stack.home / "logs").rglob("*.log")]
    texts += [p.read_text(errors="replace") for p in logs]
    texts.append(dump_rows(Database(iam_stack.database_url)))
    assert len(STATE["secrets"]) >= 3 and len(texts) > 15
    for secret in STATE["secrets"]:
        for text in texts:
            assert secret not in text


def dump_rows(db: Database) -> str:
    """Every row of every table, as text (on any store)."""
    with db.engine.connect() as conn:
        rows = [repr(tuple(row)) for table in Base.metadata.sorted_tables
                for row in conn.execute(table.select())]
    db.engine.dispose()
    return "\n".join(rows)
