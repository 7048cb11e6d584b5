"""Every message that crosses the channel layer or a WebSocket, declared once.

Worker-bound messages go to the shared worker channel (`settings.LIVEQA_WORKER_CHANNEL`) or to one
worker's own channel; listener-bound ones go to the asking connection and to the stream's groups. The
`type` of a listener-bound message is also the `type` of the JSON event a protocol-2 client receives.
"""

from __future__ import annotations

from typing import Any

# Worker-bound.
QUESTION = "answer.question"  # {question_id, reply_channel}
STREAM_NEXT = "stream.next"  # {stream_id}: answer the stream's next approved question, if it is idle
CANCEL = "answer.cancel"  # {question_id}

# Listener-bound.
STARTED = "answer.started"  # {answer_id, question_id, worker}
CHUNK = "answer.chunk"  # {answer_id, seq, text}
AUDIO = "answer.audio"  # {answer_id, seq, format, sample_rate, last, data}
CHUNK_FAILED = "answer.chunk_failed"  # {answer_id, seq, text, error}
DONE = "answer.done"  # {answer_id, question_id, timings}
FAILED = "answer.failed"  # {answer_id, question_id, reason, text, timings}
QUESTION_UPDATED = "question.updated"  # {question}: dashboards refresh that row
HELD = "answer.held"  # {answer_id, question_id, text}: waiting for a moderator's review
REPLAY = "answer.replay"  # {answer_id}: the overlay is about to replay a stored answer

# Layer messages stay well under channels-redis' 1 MB limit.
MAX_AUDIO_BYTES = 256 * 1024


def message(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, **fields}


def audio_messages(
    answer_id: int, seq: int, data: bytes, fmt: str, sample_rate: int, last: bool
) -> list[dict[str, Any]]:
    """One AUDIO message per slice of at most MAX_AUDIO_BYTES; only the final slice may carry `last`."""
    slices = [data[i : i + MAX_AUDIO_BYTES] for i in range(0, len(data), MAX_AUDIO_BYTES)] or [b""]
    return [
        message(
            AUDIO,
            answer_id=answer_id,
            seq=seq,
            format=fmt,
            sample_rate=sample_rate,
            last=last and i == len(slices) - 1,
            data=piece,
        )
        for i, piece in enumerate(slices)
    ]


def client_event(layer_message: dict[str, Any]) -> dict[str, Any]:
    """The JSON a protocol-2 client receives for a listener-bound layer message (audio bytes aside)."""
    event = {k: v for k, v in layer_message.items() if k != "data"}
    if layer_message["type"] == AUDIO:
        event["size"] = len(layer_message["data"])
    return event
