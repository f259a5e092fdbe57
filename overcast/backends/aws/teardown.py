"""Remove everything overcast created for an account, found by tags and by the slug's names."""

from __future__ import annotations

from ... import tags as T
from . import firewall, iam, images, instances, logs, network, registry
from .errors import AwsError, wrap
from .network import Report, Resource, noop
from .session import AwsContext


@wrap
def teardown_account(
    ctx: AwsContext, slug: str, owner: str | None = None, report: Report = noop
) -> None:
    """Delete the account's instances, its overcast VM images (AMIs and their snapshots),
    security groups, role/profile, log group, ECR repository and, if `owner` is given, the
    network tagged with that owner.

    The shared hosted network (owner "operator") is only removed when tearing down the
    operator itself. A retryable AwsError means something is still shutting down: call again.
    """
    ec2 = ctx.client("ec2")
    live = instances.list_account_instances(ctx, slug)
    ids = instances.terminate(ctx, [i.aws_id for i in live])
    for aws_id in ids:
        report(Resource("instance", aws_id, None, "deleting"))
    if ids:
        # Security groups and subnets stay in use until the instances are really gone.
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60}
        )
        for aws_id in ids:
            report(Resource("instance", aws_id, None, "deleted"))

    # The account's own images (our tags: this deployment's, this account's); the hosted
    # image (account "operator") goes only with the operator's own teardown.
    images.delete_images(ctx, slug, report)
    remaining = firewall.delete_groups(ctx, T.resource_tags(slug), report)
    if remaining:
        err = AwsError(
            f"Security groups {', '.join(remaining)} are still in use by instances that are "
            "shutting down; overcast will delete them on its next try."
        )
        err.retryable = True
        raise err

    iam.delete_instance_role(ctx, slug, report)
    logs.delete_log_group(ctx, slug, report)
    registry.delete_ecr_repository(ctx, slug, report)

    if owner is not None and (owner != T.OPERATOR or slug == T.OPERATOR):
        network.teardown_network(ctx, owner, report)
