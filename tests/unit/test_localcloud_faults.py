"""The local cloud's fault rules: which EC2 requests a rule targeting one cluster matches."""

from __future__ import annotations

from urllib.parse import parse_qs

from overcast.localcloud.faults import FaultRule, Faults, clusters_named


def params(body: str) -> dict[str, list[str]]:
    return parse_qs(body)


RUN = ("Action=RunInstances&TagSpecification.1.ResourceType=instance"
       "&TagSpecification.1.Tag.1.Key=overcast%3Amanaged&TagSpecification.1.Tag.1.Value=true"
       "&TagSpecification.1.Tag.2.Key=overcast%3Acluster&TagSpecification.1.Tag.2.Value=12")
DESCRIBE = ("Action=DescribeInstances&Filter.1.Name=tag%3Aovercast%3Amanaged"
            "&Filter.1.Value.1=true&Filter.2.Name=tag%3Aovercast%3Acluster&Filter.2.Value.1=7")


def test_clusters_named_in_tags_and_filters():
    assert clusters_named(params(RUN)) == {"12"}
    assert clusters_named(params(DESCRIBE)) == {"7"}
    assert clusters_named(params("Action=DescribeInstanceTypes")) == set()


def test_a_rule_for_one_cluster_and_every_action():
    faults = Faults()
    faults.add(FaultRule(action="*", error="OvercastInjectedUnexpected", cluster="12"))
    assert faults.match("DescribeInstances", None, params(DESCRIBE)) is None
    assert faults.match("RunInstances", None, params(RUN)) is not None
    assert faults.match("RunInstances", None, params(RUN)) is not None  # until cleared
    assert faults.match("DescribeInstanceTypes", None, {}) is None


def test_counted_rules_run_out():
    faults = Faults()
    faults.add(FaultRule(action="RunInstances", error="VcpuLimitExceeded", count=1))
    assert faults.match("RunInstances", "us-east-1a", params(RUN)).error == "VcpuLimitExceeded"
    assert faults.match("RunInstances", "us-east-1a", params(RUN)) is None
