"""Who may open which socket: stream keys for listeners, moderator logins for dashboards."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.security.websocket import OriginValidator
from django.conf import settings

KEY_SUBPROTOCOL_PREFIX = "key."  # Sec-WebSocket-Protocol: liveqa, key.<stream key>


def allowed_origins() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    return hosts


class KeyRouteOriginValidator(OriginValidator):
    """Refuses a foreign Origin like channels' AllowedHostsOriginValidator, but lets a handshake with no
    Origin at all through: non-browser clients send none, and these routes authenticate with the
    stream key, not with cookies a foreign page could ride on."""

    def __init__(self, application: Any):
        super().__init__(application, allowed_origins())

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def SessionOriginValidator(application: Any) -> OriginValidator:
    """Cookie-authenticated routes: the Origin must be present and one of ALLOWED_HOSTS."""
    return OriginValidator(application, allowed_origins())


def key_from_scope(scope: dict[str, Any]) -> tuple[str, str | None]:
    """The stream key from `?key=` or from a `key.<key>` subprotocol, and the subprotocol to accept."""
    for protocol in scope.get("subprotocols") or []:
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            others = [p for p in scope["subprotocols"] if not p.startswith(KEY_SUBPROTOCOL_PREFIX)]
            # A browser drops a connection whose answer names none of its subprotocols.
            return protocol[len(KEY_SUBPROTOCOL_PREFIX) :], (others[0] if others else protocol)
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    return (query.get("key") or [""])[0], None
