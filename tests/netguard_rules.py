"""No test may reach the network: any connection to a non-loopback address raises at once."""

from __future__ import annotations

import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NetworkAccessDenied(OSError):
    pass


def _allowed(address: object) -> bool:
    if isinstance(address, str | bytes):  # unix socket path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name that is not localhost would need DNS: that is the network too


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(address):
        raise NetworkAccessDenied(f"tests may not connect to {address!r}: loopback only")


def _connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _original_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
