"""A PNG of one answer's timeline: LLM tokens, chunks, TTS requests, audio frames and playback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(timeline: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(12, 4.8), dpi=110)
    lanes = {"LLM tokens": 4, "chunks ready (client)": 3, "TTS requests": 2, "audio frames (client)": 1, "playback": 0}
    for request in timeline.get("llm_requests", []):
        ax.plot([request, timeline["tokens"][0]], [4, 4], color="#999", lw=2)
    ax.vlines(timeline["tokens"], 3.75, 4.25, color="#1f77b4", lw=1)
    label_y, last_at = 3.15, None
    for chunk in timeline["chunks"]:
        ax.plot(chunk["at"], 3, "v", color="#2ca02c", ms=8)
        # Chunks ready together (the last ones, at the end of the LLM's stream) get their labels stacked.
        label_y = label_y + 0.2 if last_at is not None and chunk["at"] - last_at < 0.05 else 3.15
        ax.annotate(str(chunk["seq"]), (chunk["at"], label_y), ha="center", fontsize=8)
        last_at = chunk["at"]
    ends: list[float] = []  # each TTS row's last request's end
    for i, tts in enumerate(timeline["tts"]):
        # The first row whose last request ended before this one started (a little before: its label).
        row = next((r for r, end in enumerate(ends) if end < tts["start"] - 0.05), len(ends))
        ends[row : row + 1] = [tts["end"]]
        y = 2.22 - row * 0.22
        ax.plot([tts["start"], tts["pieces"][0]], [y, y], color="#ffbb78", lw=5, solid_capstyle="butt")
        ax.plot([tts["pieces"][0], tts["end"]], [y, y], color="#ff7f0e", lw=5, solid_capstyle="butt")
        ax.annotate(str(i), (tts["start"], y + 0.08), fontsize=7)
    frames = timeline["frames"]
    ax.vlines([f["at"] for f in frames], 0.75, 1.25, color="#d62728", lw=1)
    playing_until = frames[0]["at"] if frames else 0.0
    for f in frames:
        start = max(f["at"], playing_until)
        ax.plot([start, start + f["seconds"]], [0, 0], color="#9467bd" if f["seq"] % 2 else "#c5b0d5", lw=8,
                solid_capstyle="butt")  # fmt: skip
        playing_until = start + f["seconds"]
    ax.axvline(timeline["end"], color="#555", ls="--", lw=1)
    ax.annotate("answer.done", (timeline["end"], 4.45), fontsize=8, ha="left")
    if frames:
        ax.axvline(frames[0]["at"], color="#d62728", ls=":", lw=1)
        ax.annotate(f"first audio {frames[0]['at'] * 1000:.0f} ms", (frames[0]["at"], 4.45), fontsize=8, ha="right")
    ax.set_yticks(list(lanes.values()), list(lanes))
    ax.set_ylim(-0.6, 4.7)
    ax.set_xlim(0, max(timeline["end"] + 0.3, 3.0))
    ax.set_xlabel("seconds since the question was sent (playback continues past the right edge)")
    ax.set_title("One answer: grey = LLM request waiting, light/dark orange = TTS waiting for / streaming audio")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
