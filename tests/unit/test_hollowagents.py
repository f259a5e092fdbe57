"""The hollow agent player's parsing: an image builder's settings, spooled IMDS answers."""

from __future__ import annotations

import time

import pytest

from overcast.bootconfig import BootConfig
from overcast.localcloud.hollow import SPOOLED_PATHS
from overcast.localcloud.hollowagents import SpooledIMDS, builder_settings
from overcast.reconciler.images import builder_user_data
from overcast.store.models import Image

pytestmark = pytest.mark.timeout(30)


def test_builder_settings_read_what_the_builder_user_data_writes():
    row = Image(id=7, version="0.1.0")
    token = "tok'en $with \"quotes\""
    user_data = builder_user_data(row, "http://127.0.0.1:9/", token, None)
    assert builder_settings(user_data) == {
        "OVERCAST_CONTROL_PLANE": "http://127.0.0.1:9/", "OVERCAST_VERSION": "0.1.0",
        "OVERCAST_BUILD_ID": "7", "OVERCAST_BUILD_TOKEN": token}


def test_builder_settings_none_for_cluster_and_foreign_user_data():
    boot = BootConfig(control_plane="http://127.0.0.1:9", cluster_id=3, cluster_token="t",
                      role="worker", log_group="g", region="us-east-1")
    assert builder_settings(boot.to_cloud_init()) is None
    assert builder_settings("#!/bin/sh\necho hi\n") is None


def test_spooled_imds_answers_the_agent_identity_without_http():
    boot = BootConfig(control_plane="http://127.0.0.1:9", cluster_id=3, cluster_token="t",
                      role="worker", log_group="g", region="us-east-1")
    metadata = {"user-data": boot.to_cloud_init(), "meta-data/instance-id": "i-0abc",
                "meta-data/local-ipv4": "127.9.0.1", "meta-data/public-ipv4": "127.9.0.1",
                "meta-data/placement/availability-zone": "us-east-1a",
                "dynamic/instance-identity/document": '{"instanceId": "i-0abc"}',
                "dynamic/instance-identity/signature": "c2ln\n"}
    assert set(metadata) <= set(SPOOLED_PATHS)
    # A closed port: any HTTP request would be retried for 10 s and then fail.
    imds = SpooledIMDS({"imds": "http://127.0.0.1:9/i-0abc", "metadata": metadata})
    started = time.monotonic()
    ident = imds.identity()
    assert time.monotonic() - started < 1
    assert (ident.instance_id, ident.local_ipv4, ident.availability_zone) == (
        "i-0abc", "127.9.0.1", "us-east-1a")
    assert BootConfig.from_user_data(ident.user_data) == boot
    assert (ident.document, ident.signature) == ('{"instanceId": "i-0abc"}', "c2ln")
