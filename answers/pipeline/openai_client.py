"""The pipeline's OpenAI clients.

They run on aiohttp (openai's `DefaultAioHttpClient`): with a hundred streams open, httpx's connection
pool scans every connection on each request, and that was the worker's largest cost under 50
concurrent answers. The API modules openai imports lazily are imported here, when the client is built:
otherwise a process's first answer waited about 300 ms for them.

A client built here can also open a connection to its server before it has a request to send
(`connection_ahead`): the speech client does so while the LLM is still thinking, so that the first
chunk's speech does not wait for a TCP (and TLS) handshake, and each worker keeps one connection to
each server open through quiet spells (`AnswerPipeline.keep_warm`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
import yarl
from httpx_aiohttp import AiohttpTransport
from openai import DEFAULT_CONNECTION_LIMITS

logger = logging.getLogger(__name__)

# The pool closes a connection left idle this long (httpx's default keep-alive expiry, which openai
# passes on); `connection_ahead` gives a connection back with its idle time started anew.
KEEPALIVE = DEFAULT_CONNECTION_LIMITS.keepalive_expiry or 5.0

# Each client's transport, for connection_ahead; a client not built here has none.
_transports: weakref.WeakKeyDictionary[openai.AsyncOpenAI, _PooledTransport] = weakref.WeakKeyDictionary()


class _PooledTransport(AiohttpTransport):
    """httpx-aiohttp's transport, whose pool (the aiohttp session's connector) can be asked for a
    connection directly."""

    def session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop, as handle_async_request makes it.
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client


def async_openai(**options: Any) -> openai.AsyncOpenAI:
    transport = _PooledTransport(limits=DEFAULT_CONNECTION_LIMITS)
    client = openai.AsyncOpenAI(http_client=openai.DefaultAioHttpClient(transport=transport), **options)
    _ = client.chat.completions, client.audio.speech
    _transports[client] = transport
    return client


@contextlib.asynccontextmanager
async def connection_ahead(client: openai.AsyncOpenAI) -> AsyncIterator[None]:
    """Hold an open connection to `client`'s server (an idle one from its pool, or a new one) until the
    block ends, then give it back to the pool, where the client's next request takes it.

    Held rather than opened and returned at once: answers starting together then hold one each, not
    one between them. A connection that cannot be opened is left to the request that needs it, which
    reports the failure."""
    transport = _transports.get(client)
    connection = None
    if transport is not None:
        url = yarl.URL(str(client.base_url))
        timeout = client.timeout.connect if isinstance(client.timeout, httpx.Timeout) else client.timeout
        try:
            session = transport.session()
            request = aiohttp.ClientRequest("POST", url, loop=asyncio.get_running_loop())
            assert session.connector is not None
            connection = await session.connector.connect(request, [], aiohttp.ClientTimeout(sock_connect=timeout))
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            logger.debug("could not open a connection to %s ahead of a request: %s", url.origin(), exc)
    try:
        yield
    finally:
        if connection is not None:
            connection.release()
