"""configure_backend / reset / teardown requests: each bad input refused with a message that
names the problem, nothing stored when a check fails, secrets encrypted and never shown."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from overcast import crypto
from overcast.server.services.backend import (
    BackendConfigError,
    configure_backend,
    external_id,
    policy_documents,
    request_teardown,
    reset_backend,
)
from overcast.store.models import Backend, Notification
from tests.unit.backend_fixtures import account, customer, database, enforced_aws, keys_of

pytestmark = pytest.mark.timeout(120)


def _refused(db, slug, params) -> str:
    with db.session() as session, pytest.raises(BackendConfigError) as info:
        configure_backend(session, account(session, slug), params)
    with db.session() as session:  # the failed call's session was rolled back: nothing kept
        assert session.scalar(select(Backend)) is None
        assert session.scalars(select(Notification)).all() == []
    return info.value.message


def test_policy_documents():
    docs = policy_documents()
    assert set(docs) == {"setup", "ongoing"}
    assert docs["setup"]["Version"] == "2012-10-17"


def test_refusals_name_the_problem(tmp_path, monkeypatch):
    db, slug, _ = database(tmp_path, monkeypatch)
    with enforced_aws(monkeypatch):
        good = customer()
        secret = good["secret_access_key"]
        assert "aws_secret_access_key is missing" in _refused(
            db, slug, {"aws_access_key_id": good["access_key_id"]})
        assert "aws_access_key_id is missing" in _refused(db, slug,
                                                          {"aws_secret_access_key": secret})
        msg = _refused(db, slug, {"aws_access_key_id": "ASIAEXAMPLE123456789",
                                  "aws_secret_access_key": secret})
        assert "temporary" in msg and "ASIA" in msg and "ASIAEXAMPLE123456789" not in msg
        msg = _refused(db, slug, {**keys_of(good), "aws_session_token": "token"})
        assert "session token" in msg and "temporary" in msg
        wrong = "W" * 40  # well-formed, but not the key's secret
        msg = _refused(db, slug, {"aws_access_key_id": good["access_key_id"],
                                  "aws_secret_access_key": wrong})
        assert "does not accept these credentials" in msg and wrong not in msg
        lacking = customer(drop=("ec2:RunInstances", "iam:CreateRole", "logs:GetLogEvents"))
        msg = _refused(db, slug, keys_of(lacking))
        assert "missing 3 permission(s)" in msg
        assert "setup policy: iam:CreateRole" in msg
        assert "ongoing policy: ec2:RunInstances, logs:GetLogEvents" in msg
        assert "Unknown backend option(s): colour" in _refused(db, slug, {"colour": "red"})
        assert "Region 'mars-1'" in _refused(db, slug, {**keys_of(good),
                                                        "aws_region": "mars-1"})
        assert "Docker Hub needs" in _refused(db, slug, {**keys_of(good),
                                                         "registry_type": "docker_hub"})


def test_configure_stores_encrypted_and_masks(tmp_path, monkeypatch):
    db, slug, _ = database(tmp_path, monkeypatch)
    with enforced_aws(monkeypatch):
        acct = customer()
        with db.session() as session:
            backend = configure_backend(session, account(session, slug),
                                        {**keys_of(acct), "zone": "us-east-1b",
                                         "registry_type": "docker_hub",
                                         "registry_username": "me",
                                         "registry_access_token": "dckr_pat_secret"})
        with db.session() as session:
            row = session.scalar(select(Backend))
            assert (row.kind, row.state, row.zone) == ("aws", "pending", "us-east-1b")
            assert row.key_id_masked == "*" * 16 + acct["access_key_id"][-4:]
            assert json.loads(crypto.decrypt(row.credentials_encrypted)) == {
                "access_key_id": acct["access_key_id"],
                "secret_access_key": acct["secret_access_key"]}
            assert crypto.decrypt(row.registry_secret_encrypted) == "dckr_pat_secret"
            notes = [n.message for n in session.scalars(select(Notification))]
            assert any(acct["account_id"] in n for n in notes)
        dump = "\n".join(db.engine.raw_connection().iterdump())
        for secret in (acct["secret_access_key"], "dckr_pat_secret", acct["access_key_id"]):
            assert secret not in dump
        assert backend.id


def test_reset_and_teardown_requests(tmp_path, monkeypatch):
    db, slug, _ = database(tmp_path, monkeypatch)
    with db.session() as session:
        with pytest.raises(BackendConfigError) as info:
            request_teardown(session, account(session, slug))
        assert info.value.status == 409 and "hosted default" in info.value.message
        ext = external_id(session, account(session, slug))
        assert ext.startswith("overcast-") and external_id(session, account(session, slug)) == ext
    with enforced_aws(monkeypatch):
        acct = customer()
        with db.session() as session:
            configure_backend(session, account(session, slug), keys_of(acct))
        with db.session() as session:
            assert request_teardown(session, account(session, slug)).state == "deleting"
        with db.session() as session:
            row = reset_backend(session, account(session, slug))
            assert (row.kind, row.state, row.credentials_encrypted) == ("hosted", "ready", None)
            assert row.external_id == ext  # kept: the customer's role still trusts it
