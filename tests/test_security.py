"""Who gets in: stream keys, Origin rules, and secrets kept out of the database and the logs."""

from __future__ import annotations

import json
import logging

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from answers.logging import RedactSecretsFilter
from answers.models import Stream
from liveqa.asgi import application
from tests.channels_helpers import TIMEOUT, make_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def connects(path: str, headers=None, subprotocols=None) -> bool:
    communicator = WebsocketCommunicator(application, path, headers=headers or [], subprotocols=subprotocols)
    connected, _ = await communicator.connect(TIMEOUT)
    await communicator.disconnect()
    return connected


async def test_the_key_may_come_as_a_subprotocol_token(embedded_worker):
    _, key = await database_sync_to_async(make_stream)()
    communicator = WebsocketCommunicator(application, "/live/answer", subprotocols=["liveqa", f"key.{key}"])
    connected, subprotocol = await communicator.connect(TIMEOUT)
    assert connected and subprotocol == "liveqa"
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    assert await communicator.receive_from(TIMEOUT) == "pong"
    await communicator.disconnect()
    assert not await connects("/live/answer", subprotocols=["liveqa", "key.wrong"])


async def test_another_streams_key_does_not_open_this_overlay(embedded_worker):
    await database_sync_to_async(make_stream)(name="One", slug="one")
    _, other_key = await database_sync_to_async(make_stream)(name="Two", slug="two")
    assert not await connects(f"/ws/overlay/one/?key={other_key}")
    assert await connects(f"/ws/overlay/two/?key={other_key}")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(None, True), (b"http://localhost:8000", True), (b"http://127.0.0.1", True), (b"https://evil.example", False)],
)
async def test_key_routes_refuse_foreign_origins_but_accept_clients_without_one(embedded_worker, origin, allowed):
    _, key = await database_sync_to_async(make_stream)()
    headers = [(b"origin", origin)] if origin else []
    assert await connects(f"/live/answer?key={key}", headers) is allowed
    assert await connects(f"/ws/overlay/{(await Stream.objects.aget()).slug}/?key={key}", headers) is allowed


async def test_the_dashboard_socket_refuses_a_missing_or_foreign_origin(embedded_worker):
    stream, _ = await database_sync_to_async(make_stream)()
    for headers in ([], [(b"origin", b"https://evil.example")]):
        assert not await connects(f"/ws/dashboard/{stream.slug}/", headers)


def test_keys_are_stored_hashed_and_compared_in_constant_time(db):
    stream, key = make_stream()
    row = Stream.objects.filter(pk=stream.pk).values().get()
    assert key not in json.dumps(row, default=str)
    assert stream.check_key(key) and not stream.check_key(key[:-1]) and not stream.check_key("")


def test_keys_and_tokens_are_redacted_from_log_lines():
    record = logging.LogRecord(
        "daphne", logging.INFO, __file__, 1, 'GET "/live/answer?key=%s&x=1" %s', ("s3cret-KEY", "101"), None
    )
    assert RedactSecretsFilter().filter(record)
    assert "s3cret" not in record.getMessage()
    assert "key=[redacted]&x=1" in record.getMessage()
