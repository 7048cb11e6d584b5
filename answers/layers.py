"""LiveQA's two Redis channel layers: channels-redis' own, each changed where a burst of questions
showed it waiting on round trips.

The layer that reaches listeners is channels-redis' pub/sub layer, publishing in batches. channels-redis
publishes one message at a time per Redis connection, under a lock held for the whole
round trip. A worker answering 25 questions sends about 2,000 messages a burst (chunks and their audio,
to each listener and dashboard), so an audio piece waited behind every message queued before it: up to
200 ms between a worker receiving a first piece of speech and its listener's Redis having it. Here the
messages queued while one round trip is in flight go together in the next (one pipeline of PUBLISH
commands, in the order they were sent), so a burst costs a few round trips instead of one each.

The layer that hands questions to workers is the list-based layer, written and read in one round trip.
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
from redis.commands.core import AsyncScript

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
    """channels-redis' list-based layer, whose shared channels (the workers') are read in one round trip.

    channels-redis reads a shared channel in four round trips (put back what any process left in the
    channel's backup, pop, back up the message, clean the backup) under a per-channel lock held until
    the last one. Under a burst each round trip waits a turn of a busy event loop, so the workers read
    the questions of a burst one message per four turns; and the put-back hands a message one process
    has just taken to another (django/channels_redis#163). Here a receive is one BZPOPMIN.

    What the backup guarded is a receive cancelled while Redis' answer to the pop is on its way, which
    drops that message; channels-redis' own backup is cleaned as soon as the message is received, so a
    worker that dies after that loses it either way. A question lost so is not lost from the database:
    the asking connection's watchdog records it as failed (see answers.consumers)."""

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if "!" in channel:  # a process's own channels: channels-redis' send
            await super().send(channel, message)
        else:
            await self.send_many(channel, [message])

    async def send_many(self, channel: str, messages: list[dict[str, Any]]) -> None:
        """Put `messages` on a shared channel, to be received in this order, in one round trip.

        channels-redis' send takes four (drop expired messages, count, add, renew the expiry), and in a
        burst each waits a turn of the sender's busy event loop: 50 questions handed over as 7 messages
        took 16 ms to reach the workers. Here one script does the four. Like channels-redis it raises
        ChannelFull when the channel is at its capacity, adding none of the messages."""
        assert self.require_valid_channel_name(channel) and "!" not in channel
        now = time.time()
        members: list[bytes | float] = []
        for i, message in enumerate(messages):  # distinct scores: BZPOPMIN takes the lowest first
            members += [now + i * 1e-6, self.serialize(message)]
        added = await self._add_unless_full(
            keys=[self.prefix + channel],
            args=[int(now) - int(self.expiry), self.get_capacity(channel), int(self.expiry), *members],
            client=self.connection(next(self._send_index_generator)),
        )
        if not added:
            raise ChannelFull()

    @functools.cached_property
    def _add_unless_full(self) -> AsyncScript:
        """The script, hashed once; run on whichever connection a send picks."""
        return self.connection(0).register_script(_ADD_UNLESS_FULL)

    async def receive(self, channel: str) -> dict[str, Any]:
        if "!" in channel:  # a process's own channels: channels-redis' buffered receive
            return await super().receive(channel)
        assert self.require_valid_channel_name(channel, receive=True)
        channel_key = self.prefix + channel
        connection = self.connection(next(self._receive_index_generator))
        while (popped := await connection.bzpopmin(channel_key, timeout=self.brpop_timeout)) is None:
            pass
        _, member, _ = popped
        return self.deserialize(member)


# KEYS[1]: the channel's sorted set. ARGV: expired-before, capacity, expiry in seconds, then score and
# member pairs. The whole batch goes in if the channel has room for it, else none of it.
_ADD_UNLESS_FULL = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCARD', KEYS[1]) + (#ARGV - 3) / 2 > tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
