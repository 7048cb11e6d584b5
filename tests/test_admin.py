"""The admin: stream secrets are never shown (only handed out once), and the history's actions."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from answers import events, services
from answers.models import Question, Stream
from tests.moderation_helpers import make_answer, make_stream_with_token, make_user, worker_inbox

__all__ = ["worker_inbox"]
pytestmark = [pytest.mark.db_matters]


@pytest.fixture
def staff(client, db, worker_inbox):
    client.force_login(make_user("admin", staff=True))
    return client


def action(client, model: str, name: str, ids: list[int], *, follow: bool = True):
    return client.post(f"/admin/answers/{model}/", {"action": name, "_selected_action": ids}, follow=follow)


def test_stream_pages_never_show_the_key_or_token_hashes(staff):
    stream, _, _ = make_stream_with_token()
    pages = [staff.get("/admin/answers/stream/"), staff.get(f"/admin/answers/stream/{stream.pk}/change/")]
    for page in pages:
        assert page.status_code == 200
        assert stream.key_hash.encode() not in page.content
        assert stream.bridge_token_hash.encode() not in page.content
        assert b"key_hash" not in page.content


def test_rotating_the_key_shows_the_new_key_once_and_the_old_one_stops_working(staff):
    stream, old_key, _ = make_stream_with_token()
    page = action(staff, "stream", "rotate_key", [stream.pk]).content.decode()
    assert services.stream_for_key(old_key) is None
    new_key = page.split("New key for Test stream: <code>")[1].split("</code>")[0]
    assert services.stream_for_key(new_key, stream.slug) == stream
    assert f"/overlay/{stream.slug}/?key={new_key}" in page
    # Shown once: the next page does not have it.
    assert new_key not in staff.get("/admin/answers/stream/").content.decode()


def test_rotating_the_bridge_token(staff):
    stream, _, old_token = make_stream_with_token()
    page = action(staff, "stream", "rotate_bridge_token", [stream.pk]).content.decode()
    token = page.split("New bridge token for Test stream: <code>")[1].split("</code>")[0]
    stream.refresh_from_db()
    assert stream.check_bridge_token(token) and not stream.check_bridge_token(old_token)


def test_adding_a_stream_hands_out_its_key_and_token(staff):
    page = staff.post(
        "/admin/answers/stream/add/",
        {"name": "Evening show", "slug": "evening", "max_question_chars": 300, "questions_per_viewer_per_minute": 2},
        follow=True,
    ).content.decode()
    stream = Stream.objects.get(slug="evening")
    key = page.split("New key for Evening show: <code>")[1].split("</code>")[0]
    token = page.split("New bridge token for Evening show: <code>")[1].split("</code>")[0]
    assert stream.check_key(key) and stream.check_bridge_token(token)


def test_prompts_and_voices_are_editable(staff):
    assert (
        staff.post("/admin/answers/prompt/add/", {"name": "Pirate", "text": "Talk like a pirate."}).status_code == 302
    )
    response = staff.post(
        "/admin/answers/voicepreset/add/",
        {"name": "Nova", "engine": "openai", "voice": "nova", "speed": 1.2, "format": "wav", "language": "en"},
    )
    assert response.status_code == 302


def test_questions_can_be_searched_and_filtered(staff):
    stream, _, _ = make_stream_with_token()
    other, _, _ = make_stream_with_token(name="Other")
    Question.objects.create(stream=stream, text="Why is the sky blue?", viewer_name="ann", source="ask")
    Question.objects.create(stream=stream, text="What is pi?", viewer_name="bob", source="api", status="approved")
    Question.objects.create(stream=other, text="Elsewhere?", viewer_name="cy", source="api")
    by_viewer = staff.get("/admin/answers/question/", {"q": "bob"}).content.decode()
    assert "What is pi?" in by_viewer and "sky blue" not in by_viewer
    by_text = staff.get("/admin/answers/question/", {"q": "sky"}).content.decode()
    assert "sky blue" in by_text and "What is pi?" not in by_text
    filtered = staff.get("/admin/answers/question/", {"stream__id__exact": stream.pk, "status__exact": "pending"})
    assert "sky blue" in filtered.content.decode() and "Elsewhere" not in filtered.content.decode()
    by_source = staff.get("/admin/answers/question/", {"source__exact": "api"}).content.decode()
    assert "Elsewhere" in by_source and "sky blue" not in by_source


def test_a_question_shows_its_answers_with_timings(staff):
    stream, _, _ = make_stream_with_token()
    answer = make_answer(stream, [("Pi is 3.14.", b"RIFFxx", 1.25, "")])
    page = staff.get(f"/admin/answers/question/{answer.question_id}/change/").content.decode()
    assert "Pi is 3.14." in page and "total" in page


def test_the_answer_page_shows_chunk_timings_but_no_audio_blob(staff):
    stream, _, _ = make_stream_with_token()
    answer = make_answer(stream, [("Pi is 3.14.", b"RIFF-SECRET-AUDIO", 1.25, ""), ("Lost.", b"", None, "tts 500")])
    page = staff.get(f"/admin/answers/answer/{answer.pk}/change/").content.decode()
    assert "Pi is 3.14." in page and "1.25" in page and "17 bytes" in page and "tts 500" in page
    assert "RIFF-SECRET-AUDIO" not in page and 'name="chunks-0-audio"' not in page


def test_exporting_captions_as_webvtt_and_srt(staff):
    stream, _, _ = make_stream_with_token()
    answer = make_answer(stream, [("One.", b"a", 1.5, ""), ("Lost.", b"", None, "tts 500"), ("Two.", b"b", 0.5, "")])
    vtt = action(staff, "answer", "export_vtt", [answer.pk], follow=False)
    assert vtt["Content-Type"].startswith("text/vtt")
    assert vtt.content.decode() == (
        "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.500\nOne.\n\n2\n00:00:01.500 --> 00:00:02.000\nTwo.\n"
    )
    srt = action(staff, "answer", "export_srt", [answer.pk], follow=False)
    assert f'filename="answer-{answer.pk}.srt"' in srt["Content-Disposition"]
    assert "00:00:01,500 --> 00:00:02,000\nTwo." in srt.content.decode()
    linked = staff.get(f"/admin/answers/answer/{answer.pk}/captions.vtt")
    assert linked.content == vtt.content


def test_replaying_an_answer_sends_its_stored_audio_to_the_overlay(staff):
    stream, _, _ = make_stream_with_token()
    answer = make_answer(
        stream, [("One.", b"AUDIO-1", 1.0, ""), ("Lost.", b"", None, "x"), ("Two.", b"AUDIO-2", 1.0, "")]
    )
    layer = get_channel_layer()
    overlay = async_to_sync(layer.new_channel)("test.")
    async_to_sync(layer.group_add)(stream.overlay_group, overlay)

    assert b"Replaying" in action(staff, "answer", "replay_on_overlay", [answer.pk]).content

    heard = []
    while not heard or heard[-1]["type"] != events.DONE:
        heard.append(async_to_sync(layer.receive)(overlay))
    assert [m["type"] for m in heard] == [
        events.REPLAY, events.STARTED, events.CHUNK, events.AUDIO, events.CHUNK, events.AUDIO, events.DONE,
    ]  # fmt: skip
    assert {m["answer_id"] for m in heard} == {answer.pk}
    audio = [m for m in heard if m["type"] == events.AUDIO]
    assert [(m["seq"], m["data"], m["last"]) for m in audio] == [(0, b"AUDIO-1", True), (2, b"AUDIO-2", True)]


def test_answer_again_queues_an_approved_copy_and_wakes_a_worker(staff, worker_inbox):
    stream, _, _ = make_stream_with_token()
    answer = make_answer(stream, [("One.", b"a", 1.0, "")])
    action(staff, "answer", "answer_again", [answer.pk])
    copy = Question.objects.exclude(pk=answer.question_id).get()
    assert (copy.text, copy.status, copy.viewer_name) == ("What is pi?", "approved", "ann")
    assert worker_inbox.receive() == {"type": events.STREAM_NEXT, "stream_id": stream.pk}


def test_approving_in_the_admin_wakes_a_worker(staff, worker_inbox):
    stream, _, _ = make_stream_with_token()
    question = Question.objects.create(stream=stream, text="Hi?", source="ask")
    action(staff, "question", "approve", [question.pk])
    question.refresh_from_db()
    assert question.status == "approved"
    assert worker_inbox.receive()["type"] == events.STREAM_NEXT


def test_moderators_who_are_not_staff_cannot_use_the_admin(client, db):
    stream, _, _ = make_stream_with_token()
    client.force_login(make_user("mod", moderates=stream))
    assert client.get("/admin/answers/answer/").status_code == 302  # to the admin login
