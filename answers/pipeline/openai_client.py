"""The pipeline's OpenAI clients.

They run on aiohttp (openai's `DefaultAioHttpClient`): with a hundred streams open, httpx's connection
pool scans every connection on each request, and that was the worker's largest cost under 50
concurrent answers. The API modules openai imports lazily are imported here, when the client is built:
otherwise a process's first answer waited about 300 ms for them."""

from __future__ import annotations

from typing import Any

import openai


def async_openai(**options: Any) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(http_client=openai.DefaultAioHttpClient(), **options)
    _ = client.chat.completions, client.audio.speech
    return client
