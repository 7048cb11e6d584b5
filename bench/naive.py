"""The naive baseline: how a Q&A voice bot is usually first written, served on loopback for comparison.

Everything happens in the WebSocket handler: the answer is split at every `.`, `!` or `?`, sentences go
into a queue that is polled every 100 ms, and each sentence is synthesized whole, one after another,
before its audio is sent as one frame. It speaks the protocol-2 events the benchmark's client reads
(answer.started / answer.chunk / answer.audio + binary frame / answer.done), on the same fake server.

    python -m bench.naive --base-url http://127.0.0.1:<fake>/v1    prints `PORT <n>`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

import openai
import websockets

SAMPLE_RATE = 24000
SENTENCE_END = re.compile(r"(?<=[.!?])\s")


async def answer(socket: websockets.ServerConnection, client: openai.AsyncOpenAI, question: str) -> None:
    sentences: asyncio.Queue[str | None] = asyncio.Queue()

    async def generate() -> None:
        text = ""
        stream = await client.chat.completions.create(
            model="naive", messages=[{"role": "user", "content": question}], stream=True
        )
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                text += event.choices[0].delta.content
                *done, text = SENTENCE_END.split(text)
                for sentence in done:
                    sentences.put_nowait(sentence.strip())
        if text.strip():
            sentences.put_nowait(text.strip())
        sentences.put_nowait(None)

    await socket.send(json.dumps({"type": "answer.started", "answer_id": 1}))
    generator = asyncio.create_task(generate())
    seq = 0
    try:
        while True:
            if sentences.empty():
                await asyncio.sleep(0.1)
                continue
            sentence = sentences.get_nowait()
            if sentence is None:
                break
            await socket.send(json.dumps({"type": "answer.chunk", "seq": seq, "text": sentence}))
            speech = await client.audio.speech.create(
                model="naive", voice="alloy", input=sentence, response_format="mp3"
            )
            audio = speech.content
            await socket.send(json.dumps({
                "type": "answer.audio", "seq": seq, "format": "mp3", "sample_rate": SAMPLE_RATE,
                "last": True, "size": len(audio),
            }))  # fmt: skip
            await socket.send(audio)
            seq += 1
        await socket.send(json.dumps({"type": "answer.done", "answer_id": 1, "timings": {}}))
    finally:
        generator.cancel()


def handler(client: openai.AsyncOpenAI):
    async def handle(socket: websockets.ServerConnection) -> None:
        async for message in socket:
            request = json.loads(message)
            if request.get("type") == "hello":
                await socket.send(json.dumps({"type": "hello", "protocol": 2}))
            elif request.get("type") == "ping":
                await socket.send(json.dumps({"type": "pong"}))
            elif request.get("type") == "question":
                await answer(socket, client, request["question"])  # pings wait until the answer ends

    return handle


async def serve(base_url: str) -> None:
    client = openai.AsyncOpenAI(api_key="naive", base_url=base_url)
    async with websockets.serve(handler(client), "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.base_url))


if __name__ == "__main__":
    main()
