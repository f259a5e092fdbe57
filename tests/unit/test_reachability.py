"""Which public URLs VMs can reach, decided from addresses (docs/boot-path.md)."""

import pytest

from overcast.reachability import unreachable_reason

pytestmark = pytest.mark.timeout(60)
AWS = "https://ec2.us-east-1.amazonaws.com"
LOCAL = "http://127.0.0.1:4599"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8600", "http://localhost:8600",
                                 "https://[::1]:8600", "http://127.9.8.7"])
def test_loopback_url_refused_for_real_aws_and_named(url: str) -> None:
    reason = unreachable_reason(url, AWS)
    assert reason and "--public-url" in reason and url.split("//")[1].split(":")[0].strip("[]") \
        in reason.replace("[", "").replace("]", "")
    assert unreachable_reason(url, None)  # boto3's default endpoint is AWS's


@pytest.mark.parametrize("url", ["http://127.0.0.1:8600", "http://localhost:8600"])
def test_loopback_url_fine_when_the_cloud_is_on_loopback_too(url: str) -> None:
    assert unreachable_reason(url, LOCAL) is None


@pytest.mark.parametrize("url", ["https://overcast.example.com", "http://10.0.0.5:8600",
                                 "https://203.0.113.7:443"])
def test_routable_urls_are_accepted(url: str) -> None:
    assert unreachable_reason(url, AWS) is None


@pytest.mark.parametrize("url", ["http://0.0.0.0:8600", "ftp://example.com", "example.com",
                                 "http://"])
def test_nonsense_refused_even_locally(url: str) -> None:
    assert "--public-url" in unreachable_reason(url, LOCAL)


def test_a_cluster_is_refused_before_anything_is_made(aws, tmp_path, monkeypatch):
    """In-process moto answers as AWS (its endpoint is amazonaws.com): a loopback public URL
    fails the cluster at once, naming the setting, with nothing created in AWS."""
    import boto3

    from overcast import crypto
    from overcast.options import ClusterOptions
    from overcast.reconciler.clusters import ClusterMachine
    from overcast.reconciler.contexts import ContextFactory
    from overcast.reconciler.infra import InfraCache
    from overcast.reconciler.timeouts import Timeouts
    from overcast.store.models import Cluster
    from tests.unit.backend_fixtures import account, database

    db, slug, _ = database(tmp_path, monkeypatch)
    machine = ClusterMachine(ContextFactory(), InfraCache(), "http://127.0.0.1:8600", Timeouts())
    with db.session() as session:
        cluster = Cluster(account_id=account(session, slug).id, name="c", region="us-east-1",
                          n_workers=1, token_hash="x" * 64, token_encrypted=crypto.encrypt("t"),
                          tls_encrypted=crypto.encrypt("{}"), options=ClusterOptions().to_dict())
        session.add(cluster)
        session.commit()
        machine.step(session, cluster)
        assert cluster.state == "stopping" and cluster.final_state == "error"
        assert "--public-url" in cluster.reason and "127.0.0.1:8600" in cluster.reason
    assert boto3.client("ec2", region_name="us-east-1").describe_vpcs(Filters=[
        {"Name": "tag:overcast:managed", "Values": ["true"]}])["Vpcs"] == []
