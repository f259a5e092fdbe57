"""What a container image has: Python and the packages a cluster needs, found by running it.

Used for `--container IMAGE` environments (on a builder, against its engine): an image
without python3, dask or distributed cannot run a dask scheduler or worker, so it is refused
with a message naming what is missing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

REQUIRED = ("dask", "distributed")
# Run by the image's own python3: versions of the required packages and of Python.
_PROBE = ("import json, sys\nfrom importlib import metadata\nout = {'python': "
          "'.'.join(map(str, sys.version_info[:3]))}\nfor n in PACKAGES:\n    try:\n"
          "        out[n] = metadata.version(n)\n    except metadata.PackageNotFoundError:\n"
          "        out[n] = None\nprint(json.dumps(out))\n")
TIMEOUT = 120.0


class ImageRefused(ValueError):
    """The image cannot run a cluster; the message names what is missing."""


def probe(image: str, docker: Sequence[str] = ("docker",), timeout: float = TIMEOUT,
          packages: Sequence[str] = REQUIRED + ("cloudpickle",)) -> dict[str, str | None]:
    """{"python": "3.11.2", "dask": "2026.8.0" | None, ...} from a run of the image."""
    cmd = [*docker, "run", "--rm", "--network", "host", "--entrypoint", "python3",
           "--label", "overcast.envs.probe=1", image, "-c",
           _PROBE.replace("PACKAGES", repr(tuple(packages)))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()[-1:] or [""]
        if "executable file not found" in done.stderr or "no such file" in done.stderr.lower():
            raise ImageRefused(f"Image {image} has no python3, so it cannot run dask: use an "
                               f"image with python3, dask and distributed installed.")
        raise ImageRefused(f"Could not run image {image}: {err[0][:300]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_image(image: str, docker: Sequence[str] = ("docker",)) -> dict[str, str | None]:
    """The image's versions, or ImageRefused naming the missing packages."""
    found = probe(image, docker)
    missing = [name for name in REQUIRED if not found.get(name)]
    if missing:
        raise ImageRefused(f"Image {image} cannot run a dask cluster: it has no "
                           f"{' and no '.join(missing)} installed (found Python "
                           f"{found.get('python')}). Install {', '.join(missing)} in the image "
                           f"(matching your client's versions), or use --pip / --requirements.")
    return found
