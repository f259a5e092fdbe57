"""The default local cloud (the e2e stack, like `overcast up`) enforces IAM as AWS always does:
wrong keys are refused as AWS refuses them, and anonymous reads pass only for public data."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _code(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def test_wrong_keys_are_refused_and_anonymous_reads_only_of_public_data(stack, aws):
    assert json.loads((stack.home / "run" / "localcloud.json").read_text())["enforce_iam"]
    keys = stack.operator_keys()

    def sts(key_id: str, secret: str):
        return boto3.client("sts", region_name="us-east-1", endpoint_url=stack.endpoint,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    assert _code(sts("AKIA" + "Q" * 16, "s" * 40).get_caller_identity) == \
        "InvalidClientTokenId"
    assert _code(sts(keys["access_key_id"], "s" * 40).get_caller_identity) == \
        "SignatureDoesNotMatch"
    assert sts(keys["access_key_id"], keys["secret_access_key"]).get_caller_identity()[
        "Account"] == keys["account_id"]

    s3 = aws("s3")
    s3.create_bucket(Bucket="fidelity-private")
    s3.put_object(Bucket="fidelity-private", Key="k", Body=b"private")
    try:
        anon = boto3.client("s3", region_name="us-east-1", endpoint_url=stack.endpoint,
                            config=Config(signature_version=UNSIGNED))
        public = anon.list_objects_v2(Bucket="nyc-tlc", Prefix="trip data/")["Contents"]
        key = public[0]["Key"]
        assert anon.get_object(Bucket="nyc-tlc", Key=key)["Body"].read(4) == b"PAR1"
        # A 403 as on AWS, never a 500 (moto sends S3 denials without the XML body, so
        # botocore may only see the status code).
        assert _code(lambda: anon.get_object(Bucket="fidelity-private", Key="k")) in \
            ("AccessDenied", "403")
    finally:
        s3.delete_object(Bucket="fidelity-private", Key="k")
        s3.delete_bucket(Bucket="fidelity-private")
