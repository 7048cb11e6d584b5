"""WebSocket routes. Key routes accept clients without an Origin; cookie routes never do."""

from channels.auth import AuthMiddlewareStack
from django.urls import path, re_path

from .auth import KeyRouteOriginValidator, SessionOriginValidator
from .consumers import LiveAnswerConsumer

websocket_urlpatterns = [
    re_path(r"^live/answer/?$", KeyRouteOriginValidator(LiveAnswerConsumer.as_asgi())),
]

try:  # the overlay and dashboard consumers
    from .live import DashboardConsumer, OverlayConsumer
except ImportError:  # pragma: no cover - during a partial checkout
    pass
else:
    websocket_urlpatterns += [
        path("ws/overlay/<slug:slug>/", KeyRouteOriginValidator(OverlayConsumer.as_asgi())),
        path(
            "ws/dashboard/<slug:slug>/",
            SessionOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi())),
        ),
    ]
