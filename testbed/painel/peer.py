"""Django's side of the panel, for sapl-edge's tests and load tests.

Runs in a channels venv (.venv-channels3: Django 2.2 + channels-redis 3.4.1, or
.venv-channels4: Django 4.2 + channels-redis 4.x) against the test bed's Django project
(testbed/django_app, SAPL's schema), and does what SAPL does: log users in (real
django_session rows, in that Django version's encoding) and publish with
channels_redis's own group_send.

    peer.py login USER PASSWORD                 prints the sessionid of a new login
    peer.py create-user USER PASSWORD [PERM...] PERM as app_label.codename
    peer.py set-password USER PASSWORD
    peer.py publish GROUP JSON [TYPE]           group_send {"type": TYPE, "payload": JSON}
    peer.py publish-loop GROUP COUNT INTERVAL   payload {"seq": n, "sent_at": epoch}, then
                                                prints "published N" (load tests)

Environment: SECRET_KEY, SAPL_DB_NAME (and SAPL_DB_HOST/PORT/USER), and for publishing
PAINEL_REDIS_URL, PAINEL_PREFIX, PAINEL_LAYER (core|pubsub), PAINEL_KEYS (comma-separated
Fernet key strings, optional). Capacity and expiry are the plan's: 1500 and 10 s.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "django_app"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saplbed.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402


def _channel_layers():
    backend = {
        "core": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }[os.environ.get("PAINEL_LAYER", "core")]
    config = {
        "hosts": [os.environ["PAINEL_REDIS_URL"]],
        "prefix": os.environ["PAINEL_PREFIX"],
    }
    if backend.endswith("RedisChannelLayer"):
        config.update(capacity=1500, expiry=10)
    keys = [k for k in os.environ.get("PAINEL_KEYS", "").split(",") if k]
    if keys:
        config["symmetric_encryption_keys"] = keys
    return {"default": {"BACKEND": backend, "CONFIG": config}}


def _setup(publishing=False):
    if publishing:
        settings.INSTALLED_APPS = list(settings.INSTALLED_APPS) + ["channels"]
        settings.CHANNEL_LAYERS = _channel_layers()
    django.setup()


def login(username, password):
    from django.test import Client

    client = Client()
    if not client.login(username=username, password=password):
        sys.exit("login refused for %s" % username)
    print(client.cookies["sessionid"].value)


def create_user(username, password, *perms):
    from django.contrib.auth.models import Permission, User

    user, _ = User.objects.get_or_create(username=username)
    user.set_password(password)
    user.is_active = True
    user.save()
    user.user_permissions.clear()
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    print(user.id)


def set_password(username, password):
    from django.contrib.auth.models import User

    user = User.objects.get(username=username)
    user.set_password(password)
    user.save()


def _group_send(group, message):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)(group, message)


def publish(group, payload, kind="painel.data"):
    _group_send(group, {"type": kind, "payload": json.loads(payload)})


def publish_loop(group, count, interval):
    import asyncio

    from channels.layers import get_channel_layer

    async def run():
        layer = get_channel_layer()
        for seq in range(int(count)):
            started = time.monotonic()
            await layer.group_send(
                group, {"type": "painel.data", "payload": {"seq": seq, "sent_at": time.time()}}
            )
            await asyncio.sleep(max(0.0, float(interval) - (time.monotonic() - started)))

    asyncio.get_event_loop().run_until_complete(run())
    print("published %s" % count)


COMMANDS = {
    "login": (login, False),
    "create-user": (create_user, False),
    "set-password": (set_password, False),
    "publish": (publish, True),
    "publish-loop": (publish_loop, True),
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command, publishing = COMMANDS[sys.argv[1]]
    _setup(publishing)
    command(*sys.argv[2:])
