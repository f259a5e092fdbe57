"""The docs' example (persist a column-projected read_parquet, then compute on it) on a real
dask cluster: without overcast's work-around, dask <= 2026.8.0 returns a collection naming
partitions the scheduler never made (dask/dask#12488), and the compute fails with
"lost dependencies"."""

from __future__ import annotations

import glob

import dask
import dask.array
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster, futures_of

import overcast.client  # noqa: F401 (importing the client applies the work-around)
from overcast.client import daskcompat


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(0)
    for month in range(1, 7):  # small files with columns left out: dask fuses their reads
        n = 20_000
        columns = {f"column_{k}": rng.random(n) for k in range(6)}
        pd.DataFrame({"passenger_count": rng.random(n).round(1), "tip_amount": rng.random(n),
                      **columns}).to_parquet(folder / f"m-{month:02d}.parquet")
    return str(folder / "m-*.parquet")


@pytest.fixture(scope="module")
def client():
    # The tune stage on (dask's default, the bug's trigger), whatever else the process set.
    with dask.config.set({"optimization.tune.active": True}), \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                         dashboard_address=":0") as local, Client(local) as c:
        yield c


@pytest.mark.parametrize("how", ["method", "client", "dask"])
def test_a_persisted_read_parquet_computes(files, client, how):
    assert daskcompat.apply()  # already applied at import: idempotent
    frame = dd.read_parquet(files, columns=["passenger_count", "tip_amount"])
    persisted = {"method": frame.persist, "client": lambda: client.persist(frame),
                 "dask": lambda: dask.persist(frame)[0]}[how]()
    assert len(futures_of(persisted)) == persisted.npartitions
    result = persisted.groupby("passenger_count").tip_amount.mean().compute()
    whole = pd.concat(pd.read_parquet(f) for f in sorted(glob.glob(files)))
    expected = whole.groupby("passenger_count").tip_amount.mean()
    pd.testing.assert_series_equal(result.sort_index(), expected.sort_index())


def test_other_collections_persist_as_before(files, client):
    frame = dd.read_parquet(files, columns=["tip_amount"])
    array = dask.array.ones(10, chunks=5)
    kept, series = client.persist([array, frame.tip_amount])
    assert int(kept.sum().compute()) == 10
    assert len(futures_of(series)) == series.npartitions


def test_versions_past_the_bug_are_left_alone():
    assert daskcompat._version("2026.8.0") == (2026, 8, 0)
    assert daskcompat._version("2026.10.1rc1") > daskcompat.AFFECTED_UP_TO
