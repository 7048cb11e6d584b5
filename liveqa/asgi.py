"""ASGI entry point: `daphne liveqa.asgi:application` serves HTTP and WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "liveqa.settings")
django_asgi_app = get_asgi_application()  # before importing consumers: it sets Django up

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from answers.routing import websocket_urlpatterns  # noqa: E402
from liveqa.startup import freeze_startup_heap  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
freeze_startup_heap()
