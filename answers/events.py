"""Every message that crosses the channel layer or a WebSocket, declared once.

Worker-bound messages go to the shared worker channel (`settings.LIVEQA_WORKER_CHANNEL`) or to one
worker's own channel; listener-bound ones go to the asking connection and to the stream's groups. The
`type` of a listener-bound message is also the `type` of the JSON event a protocol-2 client receives.
"""

from __future__ import annotations

from typing import Any

# Worker-bound.
QUESTION = "answer.question"  # {question_id, reply_channel, prepared?: {question, prompt, voice}}
# {questions: [QUESTION, ...]}: handed over together; a worker starts those it has free slots for and
# sends the others back to the shared channel.
QUESTIONS = "answer.questions"
STREAM_NEXT = "stream.next"  # {stream_id}: answer the stream's next approved question, if it is idle
CANCEL = "answer.cancel"  # {question_id}
SPEAK = "answer.speak"  # {answer_id}: speak a held answer's text, as a moderator approved it

# Listener-bound.
STARTED = "answer.started"  # {answer_id, question_id, worker[, review]}: review: text only, to be held
CHUNK = "answer.chunk"  # {answer_id, seq, text}
AUDIO = "answer.audio"  # {answer_id, seq, format, sample_rate, last, data}
CHUNK_FAILED = "answer.chunk_failed"  # {answer_id, seq, text, error}
DONE = "answer.done"  # {answer_id, question_id, timings}
FAILED = "answer.failed"  # {answer_id, question_id, reason, text, timings}
QUESTION_UPDATED = "question.updated"  # {question}: dashboards refresh that row
HELD = "answer.held"  # {answer_id, question_id, text, timings}: waiting for a moderator's review
REPLAY = "answer.replay"  # {answer_id}: the overlay is about to replay a stored answer

# Layer messages stay well under channels-redis' 1 MB limit.
MAX_AUDIO_BYTES = 256 * 1024


class Sequencer:
    """Puts one answer's messages back in the order they were sent.

    The worker numbers every message of an answer (`n`). channels-redis does not promise order when
    listeners come and go (a cancelled receive puts its message back behind later ones), and a
    chunk's audio must never be glued to the next chunk's. A gap that never fills (a message the
    layer dropped) is given up on once `patience` later messages are waiting, or at the answer's end.
    """

    def __init__(self, patience: int = 64):
        self.expected = 0
        self.waiting: dict[int, dict[str, Any]] = {}
        self.patience = patience

    def push(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        n = message["n"]
        if n < self.expected:
            return []  # already delivered or given up on
        self.waiting[n] = message
        ready = []
        while self.expected in self.waiting:
            ready.append(self.waiting.pop(self.expected))
            self.expected += 1
        if self.waiting and (len(self.waiting) > self.patience or self.ends(message)):
            for key in sorted(self.waiting):
                ready.append(self.waiting.pop(key))
            self.expected = max(self.expected, key + 1)
        return ready

    @staticmethod
    def ends(message: dict[str, Any]) -> bool:
        return message["type"] in (DONE, FAILED)


class InOrder:
    """Every answer's messages in the order its worker sent them (one Sequencer per answer, dropped at the
    answer's end); messages that are not numbered, such as replays, pass as they come. An answer whose
    end never arrives (its worker died) keeps its Sequencer only until `keep` newer answers have one: a
    dashboard stays open for a whole stream."""

    def __init__(self, keep: int = 256):
        self.sequencers: dict[Any, Sequencer] = {}  # oldest answer first
        self.keep = keep

    def push(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages that are ready to be delivered now that `message` has arrived, in order."""
        if "n" not in message or message.get("answer_id") is None:
            return [message]
        answer_id = message["answer_id"]
        if answer_id not in self.sequencers:
            self.sequencers[answer_id] = Sequencer()
            if len(self.sequencers) > self.keep:
                del self.sequencers[next(iter(self.sequencers))]
        ready = self.sequencers[answer_id].push(message)
        if any(Sequencer.ends(m) for m in ready):
            self.sequencers.pop(answer_id, None)
        return ready


class WholeChunks:
    """Gathers a chunk's audio pieces until its last one. A chunk whose speech broke off never gets a
    last piece: its pieces are dropped when the next chunk's begin, never glued to them."""

    def __init__(self) -> None:
        self.key: tuple[Any, int] | None = None
        self.data = bytearray()

    def add(self, message: dict[str, Any]) -> bytes | None:
        """The chunk's whole audio once `message` is its last piece, else None."""
        key = (message["answer_id"], message["seq"])
        if key != self.key:
            self.key, self.data = key, bytearray()
        self.data += message["data"]
        if not message["last"]:
            return None
        whole, self.key, self.data = bytes(self.data), None, bytearray()
        return whole


def message(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, **fields}


def question(ref: int | str, reply_channel: str | None, prepared: dict[str, Any] | None = None) -> dict[str, Any]:
    """A question for a worker, named by its id, or by its ticket (a UUID's hex, Question.ticket) while
    it is not stored yet. `prepared` ({question, prompt, voice}) lets the worker start the LLM while it
    claims the question, instead of after."""
    named = {"ticket": ref} if isinstance(ref, str) else {"question_id": ref}
    handed = message(QUESTION, reply_channel=reply_channel, **named)
    if prepared is not None:
        handed["prepared"] = prepared
    return handed


def question_ref(handed: dict[str, Any]) -> int | str:
    """The id or ticket a `question` message names."""
    return str(handed["ticket"]) if handed.get("ticket") else int(handed["question_id"])


def questions(handed_over: list[dict[str, Any]]) -> dict[str, Any]:
    """One worker-bound message for questions handed over together (a lone one goes as it is)."""
    return handed_over[0] if len(handed_over) == 1 else message(QUESTIONS, questions=handed_over)


def work_items(worker_message: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages a worker-bound message carries: its questions, or itself."""
    if worker_message.get("type") == QUESTIONS:
        return list(worker_message["questions"])
    return [worker_message]


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
    event = {k: v for k, v in layer_message.items() if k not in ("data", "n")}
    if layer_message["type"] == AUDIO:
        event["size"] = len(layer_message["data"])
    return event
