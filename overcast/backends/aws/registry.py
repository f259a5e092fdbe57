"""The account's ECR repository (for software environments), named after the slug."""

from __future__ import annotations

from botocore.exceptions import ClientError

from ... import tags as T
from .errors import AwsError, code_of, wrap
from .network import Report, Resource, noop
from .session import AwsContext


def repository_name(slug: str) -> str:
    # ECR names are lowercase; slugs already are, this only guards against surprises.
    return slug.lower()


def _is_ours(ecr, repo: dict) -> bool:
    """Only a repository carrying our managed and deployment tags is adopted or deleted."""
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags")
    return T.ours(tags)


def _find(ecr, name: str) -> dict | None:
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    except ClientError as exc:
        if code_of(exc) != "RepositoryNotFoundException":
            raise
        return None


@wrap
def ensure_ecr_repository(ctx: AwsContext, slug: str, report: Report = noop) -> str:
    """Create (or find) the repository; returns its URI."""
    ecr = ctx.client("ecr")
    name = repository_name(slug)
    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        state = "found"
    except ClientError as exc:
        if code_of(exc) != "RepositoryNotFoundException":
            raise
        try:
            repo = ecr.create_repository(
                repositoryName=name,
                tags=[{"Key": k, "Value": v} for k, v in T.resource_tags(slug).items()],
                imageScanningConfiguration={"scanOnPush": True},
            )["repository"]
            state = "created"
        except ClientError as exc2:  # created by a concurrent pass
            if code_of(exc2) != "RepositoryAlreadyExistsException":
                raise
            repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
            state = "found"
    if state == "found" and not _is_ours(ecr, repo):
        raise AwsError(
            f"An ECR repository named {name!r} already exists and was not created by this "
            "overcast control plane. Rename or delete it, then set the backend up again."
        )
    report(Resource("ecr-repository", repo["repositoryArn"], None, state))
    return repo["repositoryUri"]


@wrap
def delete_ecr_repository(ctx: AwsContext, slug: str, report: Report = noop) -> None:
    """Delete the repository and its images. Idempotent."""
    ecr = ctx.client("ecr")
    found = _find(ecr, repository_name(slug))
    if found is None or not _is_ours(ecr, found):
        return  # gone, or someone else's repository with the slug's name: left alone
    try:
        repo = ecr.delete_repository(repositoryName=repository_name(slug), force=True)
    except ClientError as exc:
        if code_of(exc) != "RepositoryNotFoundException":
            raise
        return
    report(Resource("ecr-repository", repo["repository"]["repositoryArn"], None, "deleted"))


@wrap
def image_exists(ctx: AwsContext, slug: str, tag: str) -> bool:
    """Whether the account's repository has an image tagged `tag` (a lock hash): the check
    that lets a build be skipped and the image reused."""
    ecr = ctx.client("ecr")
    try:
        found = ecr.describe_images(repositoryName=repository_name(slug),
                                    imageIds=[{"imageTag": tag}])["imageDetails"]
    except ClientError as exc:
        if code_of(exc) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return False
        raise
    return bool(found)


@wrap
def find_repository_uri(ctx: AwsContext, slug: str) -> str:
    """The account's repository URI (made at backend setup); an AwsError saying so if missing."""
    repo = _find(ctx.client("ecr"), repository_name(slug))
    if repo is None:
        raise AwsError(f"The ECR repository {repository_name(slug)!r} for software "
                       "environments is missing: run `overcast setup aws` again.")
    return repo["repositoryUri"]
