"""On a VM: the ECR password for `docker login --password-stdin`, from the instance role.

`python3 -m overcast.agent.registry_login REGION` prints only the password (stdout goes into
docker's stdin, never to a log); boto3 finds the role's credentials through IMDS as usual.
"""

from __future__ import annotations

import base64
import sys


def ecr_login(region: str) -> tuple[str, str, str]:
    """(user, password, registry URL) of the account's ECR registry."""
    import boto3

    data = boto3.client("ecr", region_name=region).get_authorization_token()
    auth = data["authorizationData"][0]
    user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
    return user, password, auth["proxyEndpoint"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 -m overcast.agent.registry_login REGION", file=sys.stderr)
        return 2
    sys.stdout.write(ecr_login(args[0])[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
