"""Malformed backend inputs: each answers 4xx with a message saying what to change, before any
AWS call, and never echoes a secret (issue 10 §9: the swapped keys and ten more)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from overcast.server.app import create_app
from tests.unit.backend_fixtures import customer, database, enforced_aws, keys_of

pytestmark = pytest.mark.timeout(120)


def _cases(key_id: str, secret: str) -> list[tuple[str, dict, str]]:
    keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    return [
        ("swapped keys", {"aws_access_key_id": secret, "aws_secret_access_key": key_id},
         "look swapped"),
        ("key id of the wrong form", {**keys, "aws_access_key_id": "AKIA-not-a-key"},
         "aws_access_key_id is not an AWS access key id"),
        ("secret too short", {**keys, "aws_secret_access_key": secret[:20]},
         "aws_secret_access_key is not an AWS secret access key"),
        ("bad region", {**keys, "aws_region": "mars-north-1"}, "mars-north-1"),
        ("zone of another region", {**keys, "zone": "eu-west-1a"}, "eu-west-1a"),
        ("bad firewall CIDR", {**keys, "firewall": {"ports": [8786], "cidr": "10.0.0.300/8"}},
         "cidr"),
        ("bad registry_type", {**keys, "registry_type": "quay"}, "registry_type must be one of"),
        ("empty string", {**keys, "aws_region": "  "}, "aws_region is empty"),
        ("wrong type", {**keys, "zone": 7}, "zone must be a string"),
        ("malformed role ARN", {"aws_role_arn": "arn:aws:iam::12:role/x"},
         "aws_role_arn is not an IAM role ARN"),
        ("invalid s3_read bucket", {**keys, "s3_read": ["s3://Bad_Bucket/key"]},
         "is not an S3 bucket name"),
    ]


def test_malformed_backend_inputs_answer_4xx(tmp_path, monkeypatch, caplog):
    db, slug, token = database(tmp_path, monkeypatch)
    api = TestClient(create_app(db, run_reconciler=False))
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/accounts/{slug}/backend"
    caplog.set_level(logging.DEBUG)
    with enforced_aws(monkeypatch):
        acct = customer()
        cases = _cases(acct["access_key_id"], acct["secret_access_key"])
        assert len(cases) == 11
        for name, body, message in cases:
            r = api.put(url, headers=headers, json=body)
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
            detail = r.json()["detail"]
            assert message.lower() in detail.lower(), (name, detail)
            assert acct["secret_access_key"] not in r.text, name
        assert api.put(url, headers=headers, json=[1, 2]).status_code == 422
        notes = api.get(f"/api/v1/accounts/{slug}/notifications", headers=headers).text
        assert acct["secret_access_key"] not in notes
        assert acct["secret_access_key"] not in caplog.text
        # Nothing was stored by any of them.
        assert api.get(url, headers=headers).json()["kind"] == "hosted"
        # The same keys, the right way round, are accepted.
        assert api.put(url, headers=headers, json=keys_of(acct)).status_code == 200


def test_s3_read_for_a_hosted_account(tmp_path, monkeypatch):
    db, slug, token = database(tmp_path, monkeypatch)
    api = TestClient(create_app(db, run_reconciler=False))
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/accounts/{slug}/backend"
    r = api.put(url, headers=headers, json={"backend": "hosted",
                                            "s3_read": ["data-b", "data.a", "data-b"]})
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["s3_read"]) == ("hosted", ["data-b", "data.a"])
    assert api.get(url, headers=headers).json()["s3_read"] == ["data-b", "data.a"]
    r = api.put(url, headers=headers, json={"backend": "hosted", "s3_read": "data-a"})
    assert r.status_code == 400 and "s3_read must be a list" in r.json()["detail"]
    assert api.delete(url, headers=headers).json()["s3_read"] == []
