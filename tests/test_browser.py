"""In a real browser: a viewer asks on the ask page, a moderator logs in and approves it on the
dashboard, and the overlay (opened first, with the stream key) plays the answer's audio in order with
its captions. Runs daphne in a subprocess (embedded worker) against the fake OpenAI server, which
speaks real WAV audio so the overlay's decodeAudioData has something to decode."""

from __future__ import annotations

import itertools
import shutil

import pytest

from tests.conftest import ARTIFACTS
from tests.processes import LiveQA

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium"),
]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
MODERATOR = """
from django.contrib.auth.models import Group, User
from answers.models import Stream
user = User.objects.create_user("mod", password="mod-password-1", is_staff=True)
group = Group.objects.create(name="moderators")
group.user_set.add(user)
Stream.objects.get(slug="browser-stream").moderators.add(group)
"""


@pytest.fixture
def liveqa():
    app = LiveQA(
        workers=0,
        redis_url="",  # the embedded worker inside daphne
        script={"tts_real_wav": True, "token_delay": 0.01},
        settings={
            "DEBUG": "1",
            "LIVEQA_AUDIO_FORMAT": "wav",
            "LIVEQA_LLM_BACKEND": "openai",
            "LIVEQA_TTS_BACKEND": "openai",
        },
    )
    with app:
        app.manage("shell", "-c", MODERATOR.replace("browser-stream", app.stream["slug"]))
        yield app


def test_a_question_goes_from_the_ask_page_through_the_dashboard_to_the_overlay(liveqa):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    stream = liveqa.stream
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            overlay = browser.new_context().new_page()
            overlay.goto(stream["overlay_url"])
            overlay.wait_for_function("window.liveqaOverlay && window.liveqaOverlay.connected", timeout=10_000)

            viewer = browser.new_context().new_page()
            viewer.goto(stream["ask_url"])
            viewer.fill("#id_name", "ann")
            viewer.fill("#id_question", "Why is the sky blue?")
            viewer.click("button[type=submit]")
            expect(viewer.locator(".message")).to_contain_text("Your question is in the queue")
            viewer.screenshot(path=ARTIFACTS / "browser-ask.png")

            moderator = browser.new_context().new_page()
            moderator.goto(f"http://127.0.0.1:{liveqa.web_port}/admin/login/?next=/dashboard/{stream['slug']}/")
            moderator.fill("#id_username", "mod")
            moderator.fill("#id_password", "mod-password-1")
            moderator.click("input[type=submit]")
            moderator.wait_for_url(f"**/dashboard/{stream['slug']}/")
            row = moderator.locator('#queue li:has(input.text[value="Why is the sky blue?"])')
            expect(row).to_be_visible(timeout=10_000)
            row.locator("[data-action=approve]").click()
            moderator.wait_for_function(
                "window.liveqaDashboard.current && window.liveqaDashboard.current.ended === 'done'", timeout=15_000
            )
            spoken = moderator.evaluate("window.liveqaDashboard.current.chunks.map((c) => c.text)")
            assert len(spoken) >= 2
            expect(moderator.locator("#history li", has_text="Why is the sky blue?")).to_be_visible()
            moderator.screenshot(path=ARTIFACTS / "browser-dashboard.png")

            overlay.wait_for_function(
                f"window.liveqaOverlay.scheduled.length >= {len(spoken)}"
                f" && window.liveqaOverlay.captions.length >= {len(spoken)}",
                timeout=15_000,
            )
            state = overlay.evaluate("window.liveqaOverlay")
            scheduled = state["scheduled"]
            assert [item["seq"] for item in scheduled] == list(range(len(spoken)))
            assert len({item["answer_id"] for item in scheduled}) == 1
            assert [item["text"] for item in scheduled] == spoken
            for before, after in itertools.pairwise(scheduled):  # back to back, no overlap
                assert after["start"] == pytest.approx(before["start"] + before["duration"], abs=0.01)
            assert all(item["duration"] == pytest.approx(0.3, abs=0.01) for item in scheduled)
            assert [c["text"] for c in state["captions"]][: len(spoken)] == spoken
            assert state["errors"] == []
            overlay.screenshot(path=ARTIFACTS / "browser-overlay.png")
        finally:
            browser.close()
