"""What a fresh local cloud holds: the docs' nyc-tlc taxi files (machine images: stockimage.py).

The taxi data is generated (no download): deterministic per month, same columns and dtypes as
the real 2019 yellow-taxi parquet files, plausible distributions. Bytes are cached under
$OVERCAST_HOME/cache so a restart only re-uploads.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from overcast.localcloud.motoserver import OPERATOR_ACCOUNT, home_cache

BUCKET = "nyc-tlc"
BUCKET_REGION = "us-east-1"
DATA_VERSION = 1  # bump when the generator changes: it names the cache directory
YEAR = 2019
SUPPORTED_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ap-southeast-1", "ca-central-1",
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-2", "eu-central-1",
    "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1",
)

SCHEMA = pa.schema([
    ("VendorID", pa.int64()),
    ("tpep_pickup_datetime", pa.timestamp("us")),
    ("tpep_dropoff_datetime", pa.timestamp("us")),
    ("passenger_count", pa.float64()),
    ("trip_distance", pa.float64()),
    ("RatecodeID", pa.float64()),
    ("store_and_fwd_flag", pa.string()),
    ("PULocationID", pa.int64()),
    ("DOLocationID", pa.int64()),
    ("payment_type", pa.int64()),
    ("fare_amount", pa.float64()),
    ("extra", pa.float64()),
    ("mta_tax", pa.float64()),
    ("tip_amount", pa.float64()),
    ("tolls_amount", pa.float64()),
    ("improvement_surcharge", pa.float64()),
    ("total_amount", pa.float64()),
    ("congestion_surcharge", pa.float64()),
])


def key(month: int) -> str:
    return f"trip data/yellow_tripdata_{YEAR}-{month:02d}.parquet"


def rows_in(month: int) -> int:
    return 100_000 + (month * 7_919) % 12_000  # 100k..112k, varies like real months do


def month_table(month: int) -> pa.Table:
    """One month of synthetic trips; the same rows for the same month, always."""
    rng = np.random.default_rng(20190000 + month)
    n = rows_in(month)
    start = np.datetime64(f"{YEAR}-{month:02d}-01T00:00:00", "s")
    end = np.datetime64(f"{YEAR + month // 12}-{month % 12 + 1:02d}-01T00:00:00", "s")
    days = int((end - start) // np.timedelta64(1, "D"))
    # Fewer trips at night; peaks in the evening rush.
    hour_w = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 5.5, 5, 5.5, 6, 6, 6.5, 6.5,
                       6.5, 7.5, 8.5, 8, 7, 6.5, 6, 4.5])
    hour = rng.choice(24, n, p=hour_w / hour_w.sum())
    secs = (rng.integers(0, days, n) * 86400 + hour * 3600 + rng.integers(0, 3600, n))
    pickup = start + secs.astype("timedelta64[s]")

    distance = np.round(np.clip(rng.lognormal(0.55, 0.85, n), 0.0, 80.0), 2)
    distance[rng.random(n) < 0.01] = 0.0
    ratecode = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 99.0], n,
                          p=[0.968, 0.022, 0.002, 0.002, 0.0055, 0.0005])
    distance[ratecode == 2.0] = np.round(rng.normal(17.5, 1.5, (ratecode == 2.0).sum()), 2)
    speed_mph = np.clip(rng.gamma(6.0, 2.0, n), 3.0, 45.0)
    minutes = distance / speed_mph * 60 + rng.exponential(2.0, n) + 0.5
    dropoff = pickup + (minutes * 60).astype("timedelta64[s]")

    passengers = rng.choice(7, n, p=[0.015, 0.705, 0.145, 0.042, 0.02, 0.045, 0.028]).astype(float)
    vendor = rng.choice([1, 2, 4], n, p=[0.39, 0.607, 0.003])
    flag = np.where(rng.random(n) < 0.01, "Y", "N")
    zone_w = 1.0 / np.arange(1, 266) ** 0.9  # a few busy (Manhattan) zones, a long tail
    zones = np.random.default_rng(2019).permutation(265) + 1  # same ranking every month
    pu = zones[rng.choice(265, n, p=zone_w / zone_w.sum())]
    do = zones[rng.choice(265, n, p=zone_w / zone_w.sum())]
    payment = rng.choice([1, 2, 3, 4], n, p=[0.715, 0.27, 0.01, 0.005])

    fare = np.round((2.5 + 2.5 * distance + 0.5 * minutes) * 2) / 2
    fare[ratecode == 2.0] = 52.0
    extra = np.where((hour >= 20) | (hour < 6), 0.5, np.where((hour >= 16) & (hour < 20), 1.0, 0.0))
    mta = np.where(ratecode == 5.0, 0.0, 0.5)
    tolls = np.where(rng.random(n) < 0.05, 5.76, 0.0)
    tolls[ratecode == 2.0] = np.where(rng.random((ratecode == 2.0).sum()) < 0.4, 5.76, 0.0)
    # Only card tips are recorded (cash tips never reach the meter); ~12% of card riders skip.
    tip_rate = np.clip(rng.normal(0.22, 0.06, n), 0.0, 0.6)
    tipped = (payment == 1) & (rng.random(n) > 0.12)
    tip = np.where(tipped, np.round((fare + extra + tolls) * tip_rate, 2), 0.0)
    improvement = np.full(n, 0.3)
    if month == 1:  # the congestion surcharge started in February 2019
        congestion = np.where(rng.random(n) < 0.998, np.nan, 0.0)
    else:
        congestion = np.where(rng.random(n) < 0.9, 2.5, 0.0)
    total = np.round(fare + extra + mta + tip + tolls + improvement
                     + np.nan_to_num(congestion), 2)

    order = np.argsort(pickup, kind="stable")
    columns: dict[str, Any] = {
        "VendorID": vendor, "tpep_pickup_datetime": pickup, "tpep_dropoff_datetime": dropoff,
        "passenger_count": passengers, "trip_distance": distance, "RatecodeID": ratecode,
        "store_and_fwd_flag": flag, "PULocationID": pu, "DOLocationID": do,
        "payment_type": payment, "fare_amount": fare, "extra": extra, "mta_tax": mta,
        "tip_amount": tip, "tolls_amount": tolls, "improvement_surcharge": improvement,
        "total_amount": total, "congestion_surcharge": congestion,
    }
    arrays = [pa.array(columns[f.name][order], type=f.type, from_pandas=True) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def month_bytes(month: int) -> bytes:
    """The parquet file of one month, from the cache or freshly generated (then cached)."""
    path = home_cache() / f"nyc-tlc-v{DATA_VERSION}" / key(month).split("/")[-1]
    if path.exists():
        return path.read_bytes()
    buf = io.BytesIO()
    pq.write_table(month_table(month), buf, compression="snappy", row_group_size=50_000)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: a crash never leaves half a file in the cache
    return data


def seed_taxi_data(endpoint: str) -> None:
    """Create the public nyc-tlc bucket and upload the 12 months over HTTP (real S3 calls)."""
    s3 = _operator_client("s3", endpoint, BUCKET_REGION)
    s3.create_bucket(Bucket=BUCKET, ACL="public-read")  # public listing, as on AWS
    for month in range(1, 13):
        # public-read per object: moto checks anonymous HEAD/GET against the object's ACL.
        s3.put_object(Bucket=BUCKET, Key=key(month), Body=month_bytes(month), ACL="public-read")


def seed(endpoint: str) -> dict[str, float]:
    """Seed everything; returns the seconds each part took (logged at startup)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    seed_taxi_data(endpoint)
    timings["taxi"] = time.perf_counter() - t
    return timings


def _operator_client(service: str, endpoint: str, region: str, account: str | None = None) -> Any:
    import boto3

    client = boto3.client(service, endpoint_url=endpoint, region_name=region,
                          aws_access_key_id="overcast-localcloud",
                          aws_secret_access_key="overcast-localcloud")
    if account and account != OPERATOR_ACCOUNT:
        # moto's way to pick an account for unsigned-by-IAM requests.
        client.meta.events.register(
            "before-send.*.*", lambda request, **_: request.headers.__setitem__(
                "x-moto-account-id", account))
    return client
