"""Put this folder on PYTHONPATH to forbid a process any connection beyond loopback."""

from tests.netguard_rules import install

install()
