"""Logging out closes that user's open dashboard sockets."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

logger = logging.getLogger(__name__)

SESSION_CLOSED = "session.closed"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


@receiver(user_logged_out, dispatch_uid="liveqa-close-dashboards-on-logout")
def close_dashboards(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None or user.pk is None:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(user_group(user.pk), {"type": SESSION_CLOSED})
    except Exception:
        logger.exception("could not close the dashboards of user %s", user.pk)
