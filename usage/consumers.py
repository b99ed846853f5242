"""The live feed of requests for the admin: a websocket that only an active staff session may open."""
from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from usage.live import LIVE_GROUP

REFUSED = 4403


class UsageLiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            await self.close(code=REFUSED)
            return
        await self.channel_layer.group_add(LIVE_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LIVE_GROUP, self.channel_name)

    async def usage_records(self, event: dict[str, Any]) -> None:
        await self.send_json({"records": event["records"]})
