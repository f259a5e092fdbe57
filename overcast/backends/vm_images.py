"""The VM image verbs the reconciler's image pipeline and boot-failure reports use.

Transitional seam: these are AWS functions (backends/aws/images.py) re-exported here until
they join the Provider interface (backends/base.py) as verbs of their own (stock image,
builder launch, console output, create/describe/prune images). Nothing outside backends/
imports backends.aws.
"""

from overcast.backends.aws.errors import AwsError
from overcast.backends.aws.images import (
    console_output,
    create_image,
    describe_image,
    describe_instance,
    find_builder,
    image_name,
    image_tags,
    launch_builder,
    prune_images,
    stock_debian_ami,
)
from overcast.backends.aws.instances import terminate
from overcast.backends.aws.network import find_network
from overcast.backends.aws.registry import ensure_ecr_repository, find_repository_uri, image_exists

__all__ = ["AwsError", "console_output", "create_image", "describe_image", "describe_instance",
           "ensure_ecr_repository", "find_builder", "find_network", "find_repository_uri",
           "image_exists", "image_name", "image_tags", "launch_builder", "prune_images",
           "stock_debian_ami", "terminate"]
