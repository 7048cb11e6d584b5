import socket
import subprocess
import sys

import pytest

from tests.netguard_rules import NetworkAccessDenied


def test_connecting_beyond_loopback_fails_the_test():
    with socket.socket() as sock, pytest.raises(NetworkAccessDenied):
        sock.connect(("93.184.216.34", 80))


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as client:
            client.connect(server.getsockname())


def test_processes_started_by_tests_are_guarded_too(subprocess_env):
    code = "import socket; socket.create_connection(('10.1.2.3', 80), timeout=1)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "loopback only" in result.stderr
