"""Orchestration: tokens → speech chunks → concurrent, strictly ordered synthesis → typed events."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import asdict, dataclass, field

from .chunker import Chunk, SpeechChunker
from .llm import LLM, LLMError, LLMRequest
from .openai_client import KEEPALIVE
from .tts import AudioFormat, SpeechRouter, TTSEngine, TTSError, Voice

logger = logging.getLogger(__name__)


# --- Events --------------------------------------------------------------------------------------


class _Rounded:
    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}  # type: ignore[call-overload]


@dataclass
class ChunkTimings(_Rounded):
    """Seconds since the answer started."""

    ready: float  # the chunker released it
    first_audio: float | None = None
    done: float | None = None


@dataclass
class Timings(_Rounded):
    """Seconds since the answer started; None when the moment never came."""

    first_token: float | None = None
    first_chunk: float | None = None
    first_audio: float | None = None
    llm_done: float | None = None
    total: float | None = None
    characters: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class AnswerStarted:
    pass


@dataclass(frozen=True)
class ChunkReady:
    """A chunk is about to be spoken (emitted in order, right before its audio)."""

    seq: int
    caption: str
    speech: str
    language: str


@dataclass(frozen=True)
class AudioFrame:
    """Audio of chunk `seq`. Several frames may make up a chunk; the one with `last` closes it
    (its `data` may be empty)."""

    seq: int
    data: bytes
    format: str
    sample_rate: int
    last: bool


@dataclass(frozen=True)
class ChunkFailed:
    seq: int
    text: str
    error: str


@dataclass(frozen=True)
class AnswerDone:
    text: str
    timings: Timings
    chunks: list[tuple[Chunk, ChunkTimings]] = field(default_factory=list)


@dataclass(frozen=True)
class AnswerFailed:
    reason: str
    text: str  # the partial text, kept
    timings: Timings
    chunks: list[tuple[Chunk, ChunkTimings]] = field(default_factory=list)


AnswerEvent = AnswerStarted | ChunkReady | AudioFrame | ChunkFailed | AnswerDone | AnswerFailed


# --- Pipeline ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerRequest:
    llm: LLMRequest
    voice: Voice


class _Failure:
    def __init__(self, error: str):
        self.error = error


_END = object()


def _says_the_same(a: Chunk, b: Chunk) -> bool:
    return (a.speech, a.language) == (b.speech, b.language)


class _Slot:
    """One chunk's place in the speaking order, with what its synthesis produced before its turn."""

    def __init__(self, chunk: Chunk, timings: ChunkTimings, speech: SpeechRouter, voice: Voice):
        self.chunk = chunk
        self.timings = timings
        self.waiting: list[bytes | object] = []  # audio, then _END or a _Failure, until the chunk's turn
        self.engine: TTSEngine | None = None
        try:
            self.engine, self.voice = speech.route(voice, chunk.language)
            self.format = self.engine.audio_format(self.voice)
        except TTSError as exc:
            self.voice, self.format = voice, AudioFormat(voice.format, 0)
            self.waiting.append(_Failure(str(exc)))


class AnswerPipeline:
    """Runs one answer at a time per `run()` call; safe to share between concurrent answers."""

    def __init__(
        self,
        llm: LLM,
        speech: SpeechRouter,
        *,
        concurrency: int = 3,
        answer_timeout: float = 120.0,
        tts_timeout: float = 20.0,
        chunker_factory: Callable[[], SpeechChunker] = SpeechChunker,
        clock: Callable[[], float] = time.monotonic,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.llm = llm
        self.speech = speech
        self.concurrency = concurrency
        self.answer_timeout = answer_timeout
        self.tts_timeout = tts_timeout
        self.chunker_factory = chunker_factory
        self.clock = clock

    def with_llm(self, llm: LLM) -> AnswerPipeline:
        """The same speech and limits around another LLM (a FixedTextLLM speaks reviewed text)."""
        return AnswerPipeline(
            llm, self.speech, concurrency=self.concurrency, answer_timeout=self.answer_timeout,
            tts_timeout=self.tts_timeout, chunker_factory=self.chunker_factory, clock=self.clock,
        )  # fmt: skip

    async def write(self, request: LLMRequest) -> AnswerDone | AnswerFailed:
        """The answer's text only, nothing spoken: for answers a moderator reviews before they are."""
        started = self.clock()
        timings = Timings()
        text: list[str] = []
        failure = None
        try:
            async with asyncio.timeout(self.answer_timeout), aclosing(self.llm.stream(request)) as tokens:
                async for token in tokens:
                    if timings.first_token is None:
                        timings.first_token = self.clock() - started
                    text.append(token)
        except TimeoutError:
            failure = "answer_timeout"
        except LLMError as exc:
            logger.warning("LLM failed: %s", exc)
            failure = exc.reason
        except Exception:
            logger.exception("writing an answer crashed")
            failure = "internal_error"
        timings.llm_done = timings.total = self.clock() - started
        written = "".join(text)
        timings.characters = len(written)
        if failure is not None:
            return AnswerFailed(failure, written, timings)
        return AnswerDone(written, timings)

    async def keep_warm(self, every: float = 0.8 * KEEPALIVE) -> None:
        """Keep a connection to the LLM's server and to each speech server open, until cancelled: the
        clients' pools close connections left idle for KEEPALIVE seconds, so after every quiet spell
        (in a livestream, before nearly every question) the LLM request would wait for a TCP and TLS
        handshake on the way to the first word. Every `every` seconds an idle connection is taken and
        given back, which starts its idle time anew, or one is opened if the server closed it."""

        async def refresh(ready: AbstractAsyncContextManager[None]) -> None:
            try:
                async with ready:
                    pass
            except Exception as exc:
                logger.debug("could not keep a connection open: %s", exc)

        while True:
            # Together: a server that does not answer must not hold up the others' turn.
            engines = self.speech.engines.values()
            await asyncio.gather(refresh(self.llm.ready_ahead()), *(refresh(e.ready_ahead()) for e in engines))
            await asyncio.sleep(every)

    def start(self, request: AnswerRequest) -> Answering:
        """Start answering now; the events wait in the returned `Answering` until they are read."""
        events: asyncio.Queue[AnswerEvent] = asyncio.Queue()
        return Answering(_AnswerRun(self, request, events), events)

    async def run(self, request: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        """Yield the answer's events; the last one is always AnswerDone or AnswerFailed.

        Closing the iterator (or cancelling its consumer) cancels generation and synthesis.
        """
        answering = self.start(request)
        try:
            async for event in answering:
                yield event
        finally:
            await answering.aclose()


class Answering:
    """One answer in progress: iterate its events (the last is AnswerDone or AnswerFailed); `aclose()`
    cancels generation and synthesis if they are still running."""

    def __init__(self, run: _AnswerRun, events: asyncio.Queue[AnswerEvent]):
        self._events = events
        self._task = asyncio.create_task(run.produce(), name="answer-pipeline")
        self._ended = False

    def __aiter__(self) -> Answering:
        return self

    async def __anext__(self) -> AnswerEvent:
        if self._ended:
            raise StopAsyncIteration
        event = await self._events.get()
        self._ended = isinstance(event, AnswerDone | AnswerFailed)
        return event

    async def aclose(self) -> None:
        self._ended = True
        if not self._task.done():
            self._task.cancel()
        # wait, not await: the caller's own cancellation must still reach it.
        await asyncio.wait({self._task})


class _AnswerRun:
    def __init__(self, pipeline: AnswerPipeline, request: AnswerRequest, events: asyncio.Queue[AnswerEvent]):
        self.pipeline = pipeline
        self.request = request
        self.events = events
        self.started = pipeline.clock()
        self.timings = Timings()
        self.text: list[str] = []
        self.order: collections.deque[_Slot] = collections.deque()  # chunks not yet spoken to the end
        self.spoken: list[tuple[Chunk, ChunkTimings]] = []
        self.limit = asyncio.Semaphore(pipeline.concurrency)
        # The next chunk, synthesized before the chunker has confirmed where it ends.
        self.early: tuple[_Slot, asyncio.Task[None]] | None = None
        self.readying: asyncio.Task[None] | None = None  # ready_speech, until a synthesis starts

    def now(self) -> float:
        return self.pipeline.clock() - self.started

    async def produce(self) -> None:
        failure: str | None = None
        self.events.put_nowait(AnswerStarted())
        try:
            async with asyncio.timeout(self.pipeline.answer_timeout), asyncio.TaskGroup() as tasks:
                self.readying = tasks.create_task(self.ready_speech(), name="answer-tts-ahead")
                failure = await self.generate(tasks)
            # Every synthesis has ended, so every chunk has been spoken or has failed.
            assert not self.order, "chunks left unspoken"
        except TimeoutError:
            failure = "answer_timeout"
        except asyncio.CancelledError:
            failure = "cancelled"
            raise
        except Exception:
            logger.exception("answer pipeline crashed")
            failure = "internal_error"
        finally:
            self.timings.total = self.now()
            self.timings.characters = len("".join(self.text))
            text = "".join(self.text)
            if failure is None:
                self.events.put_nowait(AnswerDone(text, self.timings, self.spoken))
            else:
                self.events.put_nowait(AnswerFailed(failure, text, self.timings, self.spoken))

    async def generate(self, tasks: asyncio.TaskGroup) -> str | None:
        """Stream the LLM into the chunker; returns the failure reason, if generation failed.

        On a failure after tokens arrived, what was generated is still spoken."""
        chunker = self.pipeline.chunker_factory()
        failure = None
        try:
            # aclosing: the provider stream is closed at once even when the loop body raises.
            async with aclosing(self.pipeline.llm.stream(self.request.llm)) as tokens:
                async for token in tokens:
                    if self.timings.first_token is None:
                        self.timings.first_token = self.now()
                    self.text.append(token)
                    for chunk in chunker.feed(token):
                        self.submit(chunk, tasks)
                    # For the first word heard, even after a number ("1," may go on as "1,299").
                    self.speculate(chunker.tentative(after_digits=self.timings.chunks == 0), tasks)
        except LLMError as exc:
            logger.warning("LLM failed: %s", exc)
            failure = exc.reason
        self.timings.llm_done = self.now()
        for chunk in chunker.flush():
            self.submit(chunk, tasks)
        self.cancel_early()
        self.done_readying()
        return failure

    async def ready_speech(self) -> None:
        """While the LLM thinks, have the voice's engine ready for the first chunk (its connection to a
        speech server open), until cancelled by `done_readying`: the first word waits for the LLM, not
        for a TCP and TLS handshake. The connection pool closes idle connections after a few seconds,
        so after a quiet spell every answer's first speech request would otherwise open one."""
        try:
            engine, _ = self.pipeline.speech.route(self.request.voice, self.request.voice.language)
        except TTSError:
            return  # the chunks report it
        async with engine.ready_ahead():
            await asyncio.get_running_loop().create_future()

    def done_readying(self) -> None:
        """A synthesis starts, or none will: what ready_speech holds goes back to the engine's pool in its
        task's next step, which runs before any task created after this call. Cancelled rather than
        told, so that a connection still being opened (to a server that does not answer) does not hold
        up the end of the answer."""
        if self.readying is not None:
            self.readying.cancel()

    def speculate(self, chunk: Chunk | None, tasks: asyncio.TaskGroup) -> None:
        """Start synthesizing the next chunk as soon as its end is likely, rather than when the next
        token confirms it (one token later: 20 ms at 50 tokens/s, 100 ms at 10). For the first chunk
        that is the first word heard; for a later one it is the end of the answer when that chunk
        finishes last, and the first word of it when a slow LLM keeps the listener waiting for text.
        Another chunk, or none, cancels what was started early. A wrong guess costs a cancelled request,
        or on an engine that cannot stop part-way (Piper on the CPU) the synthesis itself, ahead of the
        chunks after it: there only the first chunk is guessed."""
        if chunk is not None and self.early is not None and _says_the_same(self.early[0].chunk, chunk):
            return
        self.cancel_early()
        if chunk is not None:
            slot = _Slot(chunk, ChunkTimings(ready=0.0), self.pipeline.speech, self.request.voice)
            if slot.engine is not None and (chunk.seq == 0 or slot.engine.cancels_cleanly):
                self.early = slot, self.start_synthesis(slot.engine, slot, tasks, "answer-tts-early")

    def cancel_early(self) -> None:
        if self.early is not None:
            self.early[1].cancel()
            self.early = None

    def submit(self, chunk: Chunk, tasks: asyncio.TaskGroup) -> None:
        if self.timings.first_chunk is None:
            self.timings.first_chunk = self.now()
        self.timings.chunks += 1
        if self.early is not None and _says_the_same(self.early[0].chunk, chunk):
            slot = self.early[0]
            self.early = None
            slot.chunk, slot.timings.ready = chunk, self.now()  # the caption may differ: a closing quote
            self.queue(slot)
            return
        self.cancel_early()
        slot = _Slot(chunk, ChunkTimings(ready=self.now()), self.pipeline.speech, self.request.voice)
        self.queue(slot)
        if slot.engine is not None:
            self.start_synthesis(slot.engine, slot, tasks, f"answer-tts-{chunk.seq}")

    def start_synthesis(
        self, engine: TTSEngine, slot: _Slot, tasks: asyncio.TaskGroup, name: str
    ) -> asyncio.Task[None]:
        self.done_readying()  # first, so that this task's request takes what ready_speech held
        return tasks.create_task(self.synthesize(engine, slot), name=name)

    async def synthesize(self, engine: TTSEngine, slot: _Slot) -> None:
        """Synthesize one chunk, at most `concurrency` at a time, each piece passed on as it comes."""
        try:
            async with self.limit, asyncio.timeout(self.pipeline.tts_timeout):
                async for data in engine.synthesize(slot.chunk.speech, slot.voice):
                    self.arrived(slot, data)
        except TimeoutError:
            self.arrived(slot, _Failure(f"synthesis took longer than {self.pipeline.tts_timeout}s"))
        except TTSError as exc:
            self.arrived(slot, _Failure(str(exc)))
        except Exception as exc:
            logger.exception("TTS engine crashed on chunk %d", slot.chunk.seq)
            self.arrived(slot, _Failure(f"{exc.__class__.__name__}: {exc}"))
        else:
            self.arrived(slot, _END)

    # -- speaking in order: audio goes out the moment it arrives if its chunk is the one being spoken,
    # otherwise it waits with its chunk. No task in between, so a piece of speech reaches the listener
    # in the same turn of the event loop as the synthesis that produced it.

    def queue(self, slot: _Slot) -> None:
        """`slot` is the next chunk to be spoken."""
        self.order.append(slot)
        if len(self.order) == 1:
            self.speak_next()

    def arrived(self, slot: _Slot, item: bytes | object) -> None:
        if self.order and self.order[0] is slot:
            self.emit(slot, item)
        else:  # an earlier chunk is still being spoken, or this one is not confirmed yet (an early start)
            slot.waiting.append(item)

    def speak_next(self) -> None:
        """The chunk at the head of the order starts: its event, then the audio that waited for it."""
        slot = self.order[0]
        chunk = slot.chunk
        self.events.put_nowait(ChunkReady(chunk.seq, chunk.caption, chunk.speech, chunk.language))
        waiting, slot.waiting = slot.waiting, []
        for item in waiting:
            self.emit(slot, item)

    def emit(self, slot: _Slot, item: bytes | object) -> None:
        chunk, fmt = slot.chunk, slot.format
        if isinstance(item, bytes):
            now = self.now()
            if slot.timings.first_audio is None:
                slot.timings.first_audio = now
            if self.timings.first_audio is None:
                self.timings.first_audio = now
            self.events.put_nowait(AudioFrame(chunk.seq, item, fmt.format, fmt.sample_rate, False))
            return
        if isinstance(item, _Failure):
            logger.warning("chunk %d skipped: %s", chunk.seq, item.error)
            self.events.put_nowait(ChunkFailed(chunk.seq, chunk.caption, item.error))
        else:
            slot.timings.done = self.now()
            self.events.put_nowait(AudioFrame(chunk.seq, b"", fmt.format, fmt.sample_rate, True))
            self.spoken.append((chunk, slot.timings))
        self.order.popleft()
        if self.order:
            self.speak_next()
