"""The channel layers on Redis: channels-redis' pub/sub layer publishing in batches, for everything
that reaches listeners, and its list-based layer sending in one round trip, for handing work to workers.

channels-redis publishes one message at a time per Redis connection, under a lock held for the whole
round trip. A worker answering 25 questions sends about 2,000 messages a burst (chunks and their audio,
to each listener and dashboard), so an audio piece waited behind every message queued before it: up to
200 ms between a worker receiving a first piece of speech and its listener's Redis having it. Here the
messages queued while one round trip is in flight go together in the next (one pipeline of PUBLISH
commands, in the order they were sent), so a burst costs a few round trips instead of one each.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close

from .group_commit import GroupCommit


class PipelinedPubSubChannelLayer(RedisPubSubChannelLayer):
    """RedisPubSubChannelLayer whose `send` and `group_send` publish through pipelines."""

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _PipelinedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer


class _PipelinedLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._publishers = {id(shard): GroupCommit(functools.partial(_publish, shard)) for shard in self._shards}

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._publish(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._publish(self._get_group_channel_name(group), message)

    async def _publish(self, channel: str, message: dict[str, Any]) -> None:
        publisher = self._publishers[id(self._get_shard(channel))]
        await publisher.submit((channel, self.channel_layer.serialize(message)))


async def _publish(shard: RedisSingleShardConnection, messages: list[tuple[str, bytes]]) -> list[int]:
    """One round trip for `messages`, published in order on one of the shard's pooled connections."""
    shard._ensure_redis()  # the shard's client, opened on first use and closed by its flush
    async with shard._redis.pipeline(transaction=False) as pipe:
        for channel, payload in messages:
            pipe.publish(channel, payload)
        return await pipe.execute()


class WorkQueueChannelLayer(RedisChannelLayer):
    """channels-redis' list-based layer whose `send` is one round trip instead of four.

    Its `send` drops the channel's expired messages, counts what is left against the capacity, adds the
    message and renews the channel's expiry, each command awaited in turn: four trips to Redis, each
    waiting for a turn of a busy event loop, between a question being stored and a worker being able to
    take it. Here the four run as one script, atomically (so a full channel is not overfilled either)."""

    _SEND = """
        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
        if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[4]) then
            return 0
        end
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        redis.call('EXPIRE', KEYS[1], ARGV[5])
        return 1
    """

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        key = channel
        if "!" in channel:  # a process-specific channel: its process reads them all through one key
            message = {**message, "__asgi_channel__": channel}
            key = self.non_local_name(channel)
        index = self.consistent_hash(channel) if "!" in channel else next(self._send_index_generator)
        now = time.time()
        added = await self.connection(index).eval(
            self._SEND,
            1,
            self.prefix + key,
            self.serialize(message),
            now,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            int(self.expiry),
        )
        if not added:
            raise ChannelFull()
