"""`overcast demo`: the docs' example, end to end, checked against pandas."""

from __future__ import annotations

import os

import click

from overcast.cli import common
from overcast.cli.common import err, fail, out

PATH = "s3://nyc-tlc/trip data/yellow_tripdata_2019-*.parquet"
COLUMNS = ["passenger_count", "tip_amount"]


def _stack_reachable() -> bool:
    """A configured control plane answers with our token."""
    import httpx

    from overcast.client.api import Api
    from overcast.client.errors import OvercastError

    try:
        Api().get("/me")
    except (OvercastError, httpx.HTTPError):
        return False
    return True


def pandas_result():
    """The same groupby with pandas over the same files (s3fs), as the reference."""
    import pandas as pd
    import s3fs

    fs = s3fs.S3FileSystem(anon=True)
    files = sorted(fs.glob(PATH))
    if not files:
        fail(f"No files match {PATH}.")
    frame = pd.concat([pd.read_parquet(fs.open(f), columns=COLUMNS) for f in files],
                      ignore_index=True)
    return frame.groupby("passenger_count").tip_amount.mean()


def same(a, b) -> bool:
    import numpy as np

    a, b = a.sort_index(), b.sort_index()
    return (list(a.index) == list(b.index)
            and bool(np.allclose(a.to_numpy(float), b.to_numpy(float), equal_nan=True)))


@click.command()
@click.option("--n-workers", default=1, show_default=True, help="Workers in the cluster.")
def demo(n_workers: int) -> None:
    """Start a cluster and run the docs' parquet example on it (starts overcast if needed)."""
    from overcast.cli import stack_cmd
    from overcast.client import config

    config.register_defaults()
    started = False
    if not _stack_reachable():
        err.print("overcast is not running here; starting it (`overcast up --detach`).")
        stack_cmd.start_stack()
        started = True
    try:
        # The docs' code reads parquet metadata in *this* process: point it at the local
        # cloud when there is one (workers get the endpoint from their VM's environment).
        lc = common.localcloud_info()
        if lc and lc.get("endpoint") and common.running_pid("localcloud"):
            os.environ["AWS_ENDPOINT_URL"] = lc["endpoint"]
        _run(n_workers)
    finally:
        if started:
            err.print("Stopping overcast (`overcast down`).")
            stack_cmd.stop_stack()


def _run(n_workers: int) -> None:
    import dask.dataframe as dd
    from distributed import Client

    import overcast

    cluster = overcast.Cluster(n_workers=n_workers)
    try:
        client = Client(cluster)
        try:
            print("Dashboard:", client.dashboard_link)
            df = dd.read_parquet(PATH, columns=COLUMNS,
                                 storage_options={"anon": True}).persist()
            result = df.groupby("passenger_count").tip_amount.mean().compute()
            print(result)
        finally:
            client.close()
    finally:
        cluster.close()
    expected = pandas_result()
    if same(result, expected):
        out.print("[green]Matches pandas over the same files.[/]")
    else:
        out.print("pandas says:")
        print(expected)
        fail("The cluster's result differs from pandas over the same files.")
