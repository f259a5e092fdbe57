"""A failed boot explains itself: the last lines of the instance's console output
(GetConsoleOutput) go into the reason a user reads."""

from __future__ import annotations

import logging

from overcast.backends import vm_images as images
from overcast.backends.vm_images import AwsError
from overcast.reconciler.contexts import Target

log = logging.getLogger("overcast.reconciler")
TAIL_LINES = 15


def with_console(target: Target, aws_id: str | None, reason: str) -> str:
    """`reason`, followed by the instance's last console lines when there are any."""
    if not aws_id or getattr(target.ctx, "client", None) is None:
        return reason  # nothing launched, or a provider connection with no console to read
    try:
        tail = images.console_output(target.ctx, aws_id, lines=TAIL_LINES).strip()
    except AwsError as exc:  # the failure is what matters; the console is a bonus
        log.warning("console output of %s: %s", aws_id, exc)
        return reason
    return f"{reason}\nLast console output of {aws_id}:\n{tail}" if tail else reason
