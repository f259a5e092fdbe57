"""Hosted tenants' VMs read only the S3 buckets their account granted (s3_read), under the
default (IAM-enforced) local cloud: the instance role grants no S3 by default."""

from __future__ import annotations

import pytest
from distributed import Client

import overcast

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
PRIVATE, GRANTED = "operator-private", "tenant-granted"


def _on_worker(client: Client) -> dict[str, str]:
    """What the tenant's code on a worker sees, with the VM's own credentials (IMDS)."""
    def probe() -> dict[str, str]:
        import boto3
        import s3fs
        from botocore.exceptions import ClientError

        s3, out = boto3.client("s3", region_name="us-east-1"), {}
        for bucket in (PRIVATE, GRANTED):
            try:
                body = s3.get_object(Bucket=bucket, Key="data.txt")["Body"].read()
                out[f"boto3:{bucket}"] = body.decode()
            except ClientError as exc:
                out[f"boto3:{bucket}"] = "denied:" + exc.response["Error"]["Code"]
            try:
                out[f"s3fs:{bucket}"] = ",".join(s3fs.S3FileSystem(anon=False).ls(bucket))
            except PermissionError:
                out[f"s3fs:{bucket}"] = "denied"
        return out

    return client.submit(probe, pure=False).result(timeout=60)


def test_instance_role_reads_only_granted_buckets(overcast_config, aws):
    s3 = aws("s3")
    for bucket in (PRIVATE, GRANTED):
        s3.create_bucket(Bucket=bucket)  # private (no ACL grant), in the operator's account
        s3.put_object(Bucket=bucket, Key="data.txt", Body=f"secret of {bucket}".encode())
    try:
        with overcast.Cluster(name="s3-default", n_workers=1) as cluster, Client(cluster) as c:
            seen = _on_worker(c)
        assert seen[f"boto3:{PRIVATE}"].startswith("denied"), seen
        assert seen[f"boto3:{GRANTED}"].startswith("denied"), seen
        assert seen[f"s3fs:{PRIVATE}"] == seen[f"s3fs:{GRANTED}"] == "denied", seen

        doc = overcast.set_backend_options(backend="hosted", s3_read=[GRANTED])
        assert (doc["kind"], doc["s3_read"]) == ("hosted", [GRANTED])
        with overcast.Cluster(name="s3-granted", n_workers=1) as cluster, Client(cluster) as c:
            seen = _on_worker(c)
        assert seen[f"boto3:{GRANTED}"] == f"secret of {GRANTED}", seen
        assert seen[f"s3fs:{GRANTED}"] == f"{GRANTED}/data.txt", seen
        assert seen[f"boto3:{PRIVATE}"].startswith("denied"), seen
        assert seen[f"s3fs:{PRIVATE}"] == "denied", seen
    finally:
        overcast.set_backend_options(backend="hosted")  # no grants: back to the default
        for bucket in (PRIVATE, GRANTED):
            s3.delete_object(Bucket=bucket, Key="data.txt")
            s3.delete_bucket(Bucket=bucket)
