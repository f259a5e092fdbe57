"""Container instances of the local cloud: start latency and the stock image build.

    .venv/bin/python bench/container_instances.py [--rounds 5] [--batch 4] [--cold]

- start: RunInstances of the stock Debian 12 AMI (found through SSM) -> its user data running
  (a `#!/bin/sh` that prints the time; the container shares the host's clock), one instance at
  a time, then `--batch` instances in one RunInstances call (time until the last one runs).
- stock image: `stockimage.ensure` with the image cached (the usual case), and with `--cold` a
  full build (mmdebstrap + import) into a throw-away tag, removed afterwards (the cached image,
  shared by every local cloud on the machine, is not touched).

Starts its own in-process local cloud (temporary OVERCAST_HOME) and stops it at the end; every
instance is terminated. Prints markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEBIAN_12 = "/aws/service/debian/release/12/latest/amd64"
SCRIPT = "#!/bin/sh\necho user-data-at $(date +%s.%N)\n"


def user_data_time(ec2, iid: str, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ec2.get_console_output(InstanceId=iid).get("Output") or ""
        for line in out.splitlines():
            if line.startswith("user-data-at "):
                return float(line.split()[1])
        time.sleep(0.02)
    raise TimeoutError(f"{iid} did not run its user data")


def start_round(lc, ec2, ami: str, count: int) -> tuple[float, float]:
    """(seconds RunInstances -> last user data running, seconds in the runner's docker run)."""
    t0 = time.time()
    ids = [i["InstanceId"] for i in ec2.run_instances(
        ImageId=ami, MinCount=count, MaxCount=count, InstanceType="t3.micro",
        UserData=SCRIPT)["Instances"]]
    last = max(user_data_time(ec2, iid) for iid in ids)
    engine = max(lc.runner.containers.boot_latency.get(iid, 0.0) for iid in ids)
    ec2.terminate_instances(InstanceIds=ids)
    return last - t0, engine


def cold_build(client) -> float:
    from overcast.localcloud import stockimage

    tag = f"overcast-localcloud/bench:cold-{os.getpid()}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=stockimage.cache_dir()) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        stockimage.mmdebstrap(tar, Path(tmp))
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(str(tar), repository=repository, tag=version)
    took = time.monotonic() - started
    client.images.remove(tag, force=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    os.environ["OVERCAST_HOME"] = tempfile.mkdtemp(prefix="overcast-bench-")

    import boto3

    from overcast.localcloud import stockimage
    from overcast.localcloud.main import LocalCloud

    lc = LocalCloud(port=0, imds_port=0, write_state=False)
    try:
        boxes = lc.runner.containers
        boxes.ready.wait(900)
        if boxes.error:
            raise SystemExit(boxes.error)
        kw = {"region_name": "us-east-1", "endpoint_url": lc.endpoint,
              "aws_access_key_id": "t", "aws_secret_access_key": "t"}
        ec2 = boto3.client("ec2", **kw)
        ami = boto3.client("ssm", **kw).get_parameter(Name=DEBIAN_12)["Parameter"]["Value"]
        start_round(lc, ec2, ami, 1)  # warm-up: first boto3 calls, page cache
        singles = [start_round(lc, ec2, ami, 1) for _ in range(args.rounds)]
        batches = [start_round(lc, ec2, ami, args.batch) for _ in range(max(1, args.rounds // 2))]
        t = time.monotonic()
        stockimage.ensure(boxes.client)
        cached = time.monotonic() - t
        cold = cold_build(boxes.client) if args.cold else None
    finally:
        lc.stop()

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.1f}\n")
    print("| measure | rounds | median (min-max) |\n|---|---|---|")
    print(f"| RunInstances -> user data running, 1 instance | {len(singles)} | "
          f"{fmt([s for s, _ in singles])} |")
    print(f"| of which the runner's `docker run` (create + start) | {len(singles)} | "
          f"{fmt([e for _, e in singles])} |")
    print(f"| RunInstances -> user data running, last of {args.batch} | {len(batches)} | "
          f"{fmt([s for s, _ in batches])} |")
    print(f"| stock image, cached (`stockimage.ensure`) | 1 | {cached:.2f} s |")
    if cold is not None:
        print(f"| stock image, cold build (mmdebstrap + import) | 1 | {cold:.1f} s |")


if __name__ == "__main__":
    main()
