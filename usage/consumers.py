"""The live feed of requests for the admin: a websocket only a session that may view usage can open
(the same rule as the live page, usage/permissions.py)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from usage.live import LIVE_GROUP
from usage.permissions import can_view_usage

REFUSED = 4403


class UsageLiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        # has_perm reads the user's permissions from the database: not on the event loop.
        if not await database_sync_to_async(can_view_usage)(self.scope.get("user")):
            await self.close(code=REFUSED)
            return
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def usage_records(self, event: dict[str, Any]) -> None:
        await self.send_json({"records": event["records"]})
