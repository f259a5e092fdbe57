"""The backend state machine in-process: setup in the customer's account (live resource rows),
re-running changes nothing, ongoing-only finds but never creates, teardown removes it all."""

from __future__ import annotations

import json

import pytest
from moto.ec2.models import ec2_backends
from moto.iam.models import iam_backends
from sqlalchemy import select

from overcast.backends.aws import policies
from overcast.backends.aws.errors import PermissionMissing
from overcast.reconciler import images
from overcast.reconciler.backend import BackendMachine
from overcast.reconciler.contexts import RECORD_ENV, ContextFactory
from overcast.reconciler.infra import InfraCache
from overcast.server.services.backend import configure_backend, request_teardown
from overcast.store.models import Backend, BackendResource, Notification
from tests.unit.backend_fixtures import (
    REGION,
    account,
    customer,
    database,
    enforced_aws,
    keys_of,
)

pytestmark = pytest.mark.timeout(180)
WRITES = ("Create", "Allocate", "Attach", "Associate", "Modify", "Put", "Delete", "Run",
          "Replace", "Add", "Authorize")


def _recorded(path, start: int = 0) -> list[str]:
    lines = path.read_text().splitlines()[start:] if path.exists() else []
    return [json.loads(line)["action"] for line in lines]


def _detach_setup(acct: dict) -> None:
    iam = iam_backends[acct["account_id"]]["aws"]
    arn = f"arn:aws:iam::{acct['account_id']}:policy/overcast-setup"
    iam.detach_user_policy(arn, acct["user"])


def test_setup_rerun_find_and_teardown(tmp_path, monkeypatch):
    record = tmp_path / "actions.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(record))
    db, slug, _ = database(tmp_path, monkeypatch)
    with enforced_aws(monkeypatch):
        acct = customer()
        with db.session() as session:
            configure_backend(session, account(session, slug), keys_of(acct))
        probes = _recorded(record)
        assert set(probes) <= policies.all_actions() | {"sts:GetCallerIdentity"}
        contexts, infra = ContextFactory(), InfraCache()
        # Setup also waits for the account's VM image: that pipeline has its own tests
        # (test_image_pipeline.py); here the account has one already.
        monkeypatch.setattr(images, "ready_for_setup", lambda *a, **k: True)
        machine = BackendMachine(contexts, infra)
        assert machine.run_pass(db)
        with db.session() as session:
            backend = session.scalar(select(Backend))
            assert backend.state == "ready", backend.reason
            rows = session.scalars(select(BackendResource)).all()
            kinds = sorted({r.kind for r in rows})
            assert kinds == ["ecr-repository", "elastic-ip", "iam-role", "instance-profile",
                             "internet-gateway", "log-group", "nat-gateway", "route-table",
                             "subnet-private", "subnet-public", "vpc"]
            assert all(r.scope == slug and r.state == "created" for r in rows)
            zones = sorted(r.zone for r in rows if r.kind == "subnet-private")
            assert zones == [f"{REGION}{z}" for z in "abcdef"]
            events = {n.event_type for n in session.scalars(select(Notification))}
            assert {"backend-provisioning", "backend-ready", "resource-vpc"} <= events
        setup_calls = _recorded(record, len(probes))
        assert set(setup_calls) <= policies.all_actions()
        assert not machine.run_pass(db)  # ready: nothing to do
        # The customer's account has it all; the operator's has no overcast VPC.
        cust_vpcs = ec2_backends[acct["account_id"]][REGION].vpcs.values()
        op_vpcs = ec2_backends["123456789012"][REGION].vpcs.values()
        assert sum(not v.is_default for v in cust_vpcs) == 1
        assert sum(not v.is_default for v in op_vpcs) == 0

        # Setup again: everything is found, nothing is created (the inline policy is re-put).
        with db.session() as session:
            session.scalar(select(Backend)).state = "pending"
        start = len(record.read_text().splitlines())
        machine.run_pass(db)
        again = _recorded(record, start)
        assert [a for a in again if a.split(":")[1].startswith(WRITES)] == ["iam:PutRolePolicy"]

        # Ongoing only: the network is found; a zone without subnets cannot get them.
        _detach_setup(acct)
        with db.session() as session:
            acc = account(session, slug)
            target = contexts.for_account(session, acc, REGION)
            found = infra.ensure(session, acc, target, REGION)
            assert found.instance_profile == slug and len(found.network.private_subnets) == 6
            ec2 = ec2_backends[acct["account_id"]][REGION]
            for subnet in (found.network.public_subnets[f"{REGION}c"],
                           found.network.private_subnets[f"{REGION}c"]):
                ec2.delete_subnet(subnet)  # as the account's admin would
            infra.ensure(session, acc, target, REGION)  # a new cluster: looked up again
            with pytest.raises(PermissionMissing) as info:
                infra.ensure(session, acc, target, REGION, f"{REGION}c")
            assert "Zone us-east-1c has no overcast subnet" in str(info.value)
            assert "setup permissions" in str(info.value)
            assert info.value.actions == ["ec2:CreateSubnet"]

        # Teardown needs setup again; afterwards the account is hosted and the VPC gone.
        iam = iam_backends[acct["account_id"]]["aws"]
        iam.attach_user_policy(f"arn:aws:iam::{acct['account_id']}:policy/overcast-setup",
                               acct["user"])
        with db.session() as session:
            request_teardown(session, account(session, slug))
        for _ in range(10):
            if not machine.run_pass(db):
                break
        with db.session() as session:
            backend = session.scalar(select(Backend))
            assert (backend.kind, backend.state, backend.credentials_encrypted) == \
                ("hosted", "ready", None)
            states = {r.kind: r.state for r in session.scalars(select(BackendResource))}
            assert states["vpc"] == "deleted" and states["iam-role"] == "deleted"
        assert sum(not v.is_default for v in cust_vpcs) == 0
