"""The generated nyc-tlc taxi data: deterministic, big enough, the real 2019 schema."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from overcast.localcloud import seed

pytestmark = pytest.mark.timeout(120)

COLUMNS = [
    "VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count",
    "trip_distance", "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID",
    "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
    "improvement_surcharge", "total_amount", "congestion_surcharge",
]


def test_same_bytes_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "a"))
    first = seed.month_bytes(3)
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "b"))  # no cache: generated again
    assert seed.month_bytes(3) == first
    assert seed.month_bytes(3) == first  # from the cache


def test_at_least_a_million_rows():
    assert sum(seed.rows_in(m) for m in range(1, 13)) >= 1_000_000
    assert seed.month_table(5).num_rows == seed.rows_in(5)


def test_columns_and_dtypes(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    df = pq.read_table(io.BytesIO(seed.month_bytes(1))).to_pandas()
    assert list(df.columns) == COLUMNS
    assert str(df.tpep_pickup_datetime.dtype).startswith("datetime64")
    for col in ("VendorID", "PULocationID", "DOLocationID", "payment_type"):
        assert df[col].dtype == np.int64
    for col in ("passenger_count", "trip_distance", "RatecodeID", "fare_amount", "tip_amount",
                "total_amount", "congestion_surcharge"):
        assert df[col].dtype == np.float64
    assert set(df.store_and_fwd_flag.unique()) == {"N", "Y"}
    assert (df.tpep_pickup_datetime.dt.month == 1).all()


def test_plausible_distributions():
    df = seed.month_table(6).to_pandas()
    counts = df.passenger_count.value_counts(normalize=True)
    assert set(counts.index) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    assert counts.idxmax() == 1.0 and counts[1.0] > 0.6
    tips = df.groupby("payment_type").tip_amount.mean()
    assert tips[1] > 1.0 and tips[2] == 0.0  # only card tips are recorded
    card = df[df.payment_type == 1]
    assert np.corrcoef(card.fare_amount, card.tip_amount)[0, 1] > 0.5
    assert (df.tpep_dropoff_datetime > df.tpep_pickup_datetime).all()
    extras = df.fare_amount + df.extra + df.mta_tax + df.tip_amount + df.tolls_amount
    assert np.allclose(df.total_amount, (extras + df.improvement_surcharge
                                         + df.congestion_surcharge.fillna(0)).round(2))
