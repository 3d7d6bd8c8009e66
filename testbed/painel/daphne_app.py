"""The panel as Channels serves it without the edge: Daphne with one consumer per socket.

loadtests/painel-fanout.sh runs it in .venv-daphne as the comparison peer of sapl-edge:

    PYTHONPATH=testbed/painel daphne -b 127.0.0.1 -p PORT daphne_app:application

Each socket of /ws/painel/<sessao_id>/ joins the group painel_<sessao_id> on the same
channel layer peer.py publishes to (same prefix, capacity and expiry: peer.py's own
CHANNEL_LAYERS), and every group message goes out as {"type": "data", "payload": ...}, the
frame the edge sends, so one load client measures both. Like the edge with
auth = "public", nobody is asked to log in: the comparison is the fan-out, not the session
check. {"type": "ping"} gets {"type": "pong"}, as in SAPL's WebSocket branch.

Environment: SECRET_KEY, PAINEL_REDIS_URL, PAINEL_PREFIX, PAINEL_LAYER, PAINEL_KEYS (as
peer.py's publishing commands).
"""
import json

import peer

# The test bed's Django project with channels and the load test's channel layer.
peer._setup(publishing=True)

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


class PainelConsumer(AsyncWebsocketConsumer):
    group = None

    async def connect(self):
        self.group = "painel_%s" % self.scope["url_route"]["kwargs"]["sessao_id"]
        # Joined before the accept, so an open socket is already a group member.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            kind = json.loads(text_data or "").get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))
        else:
            await self.send(
                text_data=json.dumps({"type": "error", "message": "mensagem não reconhecida"})
            )

    async def painel_data(self, event):
        await self.send(text_data=json.dumps({"type": "data", "payload": event["payload"]}))


application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [re_path(r"^ws/painel/(?P<sessao_id>[0-9]+)/$", PainelConsumer.as_asgi())]
        )
    }
)
