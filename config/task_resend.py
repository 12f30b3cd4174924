"""Handing a row's Celery task to the broker, and sending it again when the broker never took it.

Shared by training runs (modeling.services) and export jobs (annotation.exports). A row whose task
must reach a worker records `enqueued_at` (when the broker took the task) and `enqueue_tried_at`
(the last attempt to send it). The request that creates the row sends first, after its commit;
when the broker is down the row stays waiting, and whoever looks at it later (a retrain check,
a researcher polling an export) sends it again once it is due.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

# A row whose task the broker never took is sent again at most this often (by one process at a
# time), so a broker that is down costs one failed publish per interval, not one per poll.
RESEND_UNSENT_AFTER = timedelta(seconds=5)
# A row the broker took but that still waits this long after is sent again: a broker restarted
# without persistence loses its messages. A duplicate costs nothing (claiming a row is a
# compare-and-swap on its status, in both apps).
RESEND_QUEUED_AFTER = timedelta(minutes=15)


def task_resend_claim(*, waiting: QuerySet[Any]) -> int | None:
    """Claim one row of `waiting` (rows whose task should be on the broker) that is due to be sent again.

    Due: never taken by the broker and last tried RESEND_UNSENT_AFTER ago (or never tried), or
    taken but still waiting RESEND_QUEUED_AFTER later. Of several processes checking at once, the
    one whose compare-and-swap on `enqueue_tried_at` succeeds gets the row's pk and sends; the
    others get None. One indexed query when nothing is due.
    """
    now = timezone.now()
    unsent = Q(enqueued_at__isnull=True) & (
        Q(enqueue_tried_at__isnull=True) | Q(enqueue_tried_at__lt=now - RESEND_UNSENT_AFTER)
    )
    lost = Q(enqueued_at__lt=now - RESEND_QUEUED_AFTER) & Q(enqueue_tried_at__lt=now - RESEND_QUEUED_AFTER)
    due = waiting.filter(unsent | lost).values_list("pk", "enqueue_tried_at").first()
    if due is None:
        return None
    pk, tried = due
    if not waiting.filter(pk=pk, enqueue_tried_at=tried).update(enqueue_tried_at=now):
        return None  # another process is sending it
    return int(pk)


def task_publish(*, send: Callable[[], object]) -> str | None:
    """Hand a task to the broker: None once it has it, else why it could not (for the caller to record)."""
    try:
        send()
    except Exception as exc:  # kombu OperationalError, redis errors…: whatever stops the publish
        return f"{type(exc).__name__}: {exc}"
    return None
