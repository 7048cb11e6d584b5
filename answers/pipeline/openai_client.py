"""The OpenAI clients of the pipeline run on aiohttp (openai's `DefaultAioHttpClient`): with a hundred
streams open, httpx's connection pool scans every connection on each request and became the worker's
largest cost under 50 concurrent answers."""

from __future__ import annotations

from typing import Any

import openai


def async_openai(**options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(http_client=openai.DefaultAioHttpClient(), **options)
