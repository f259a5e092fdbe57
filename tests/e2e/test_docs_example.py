"""The documentation's example, on a real overcast cluster, equals pandas over the same files."""

from __future__ import annotations

import dask.dataframe as dd
import pandas as pd
import pytest
from distributed import Client

import overcast

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
FILES = "s3://nyc-tlc/trip data/yellow_tripdata_2019-*.parquet"


def test_docs_example_matches_pandas(overcast_config):
    with overcast.Cluster(name="docs-example", n_workers=1) as cluster:
        with Client(cluster) as client:
            assert client.dashboard_link.startswith("https://")
            df = dd.read_parquet(FILES, columns=["passenger_count", "tip_amount"],
                                 storage_options={"anon": True}).persist()
            result = df.groupby("passenger_count").tip_amount.mean().compute()
    import s3fs
    fs = s3fs.S3FileSystem(anon=True)
    paths = sorted(fs.glob(FILES.removeprefix("s3://")))
    assert len(paths) == 12
    frame = pd.concat(pd.read_parquet(fs.open(p), columns=["passenger_count", "tip_amount"])
                      for p in paths)
    assert len(frame) >= 1_000_000
    expected = frame.groupby("passenger_count").tip_amount.mean()
    pd.testing.assert_series_equal(result.sort_index(), expected.sort_index(),
                                   check_exact=False, rtol=1e-9)
