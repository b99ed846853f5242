"""The one rule for who may see usage data (records, rollups, spend, the live feed), in every
surface that shows it: the admin list, dashboard, live page and CSV export, the live-feed
websocket and a staff session on GET /admin/usage. Seeing any device's traffic and costs is the
usage record's view permission; being staff alone is not enough."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AbstractUser, AnonymousUser

VIEW_USAGE_PERMISSION = "usage.view_usagerecord"


def can_view_usage(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Active staff with the usage view permission (superusers have every permission)."""
    if user is None or not user.is_authenticated or not isinstance(user, AbstractUser):
        return False
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_USAGE_PERMISSION))
