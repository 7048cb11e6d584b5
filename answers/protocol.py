"""What clients may send over `/live/answer`, validated into typed messages or a stable error code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .pipeline.tts import FORMATS, MAX_SPEED, MIN_SPEED


class ProtocolError(Exception):
    """A client mistake: `code` is stable (clients may switch on it), `message` is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Hello:
    protocol: int


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Ask:
    question: str
    prompt: str = ""
    voice_override: dict[str, Any] = field(default_factory=dict)


ClientMessage = Ping | Hello | Cancel | Ask

PROTOCOLS = (1, 2)


@dataclass(frozen=True)
class Limits:
    max_question_chars: int
    max_prompt_chars: int
    voices: frozenset[str]
    prompt_allowed: bool = True


def parse(raw: str, limits: Limits) -> ClientMessage:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", "The message is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise ProtocolError("not_an_object", "The message must be a JSON object.")
    kind = data.get("type")
    if kind == "ping":
        return Ping()
    if kind == "cancel":
        return Cancel()
    if kind == "hello":
        protocol = data.get("protocol")
        if isinstance(protocol, bool) or protocol not in PROTOCOLS:
            raise ProtocolError("unsupported_protocol", f"protocol must be one of {PROTOCOLS}.")
        return Hello(protocol)
    if kind == "question":
        return _ask(data, limits)
    raise ProtocolError("unknown_type", "type must be one of: ping, question, cancel, hello.")


def _ask(data: dict[str, Any], limits: Limits) -> Ask:
    question = data.get("question")
    if question is None:
        raise ProtocolError("missing_question", "question is required.")
    if not isinstance(question, str):
        raise ProtocolError("invalid_field", "question must be a string.")
    question = question.strip()
    if not question:
        raise ProtocolError("empty_question", "question is empty.")
    if len(question) > limits.max_question_chars:
        raise ProtocolError("question_too_long", f"question is longer than {limits.max_question_chars} characters.")

    prompt = data.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ProtocolError("invalid_field", "prompt must be a string.")
    prompt = (prompt or "").strip()
    if prompt and not limits.prompt_allowed:
        raise ProtocolError("prompt_not_allowed", "Only the stream's owner may set a prompt.")
    if len(prompt) > limits.max_prompt_chars:
        raise ProtocolError("prompt_too_long", f"prompt is longer than {limits.max_prompt_chars} characters.")

    override: dict[str, Any] = {}
    voice = data.get("voice")
    if voice is not None:
        if not isinstance(voice, str):
            raise ProtocolError("invalid_field", "voice must be a string.")
        if voice.strip():
            if voice.strip() not in limits.voices:
                raise ProtocolError("unknown_voice", f"Unknown voice {voice.strip()[:50]!r}.")
            override["voice"] = voice.strip()
    speed = data.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise ProtocolError("invalid_field", "speed must be a number.")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ProtocolError("invalid_speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}.")
        override["speed"] = float(speed)
    fmt = data.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise ProtocolError("invalid_field", f"format must be one of {', '.join(FORMATS)}.")
        override["format"] = fmt
    return Ask(question, prompt, override)
