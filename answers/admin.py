"""The admin: streams (their secrets never shown, only handed out once), prompts, voices, and the
question and answer history with replay, answer-again and caption export."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from . import captions, intake, moderation, replay
from .models import Answer, AnswerChunk, Prompt, Question, Stream, VoicePreset


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "auto_approve", "hold_answers_for_review", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["moderators"]
    fields = [
        "name", "slug", "default_prompt", "default_voice", "auto_approve", "hold_answers_for_review",
        "max_question_chars", "questions_per_viewer_per_minute", "moderators", "links",
    ]  # fmt: skip
    readonly_fields = ["links"]
    actions = ["rotate_key", "rotate_bridge_token"]

    @admin.display(description="Pages")
    def links(self, stream: Stream) -> str:
        if not stream.pk:
            return "—"
        return format_html(
            '<a href="/dashboard/{0}/">dashboard</a> · <a href="/s/{0}/ask">ask page</a> · '
            "overlay: <code>/overlay/{0}/?key=…</code> (the key is shown once, when set)",
            stream.slug,
        )

    def save_model(self, request: HttpRequest, stream: Stream, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, stream, form, change)
            return
        key, token = stream.rotate_key(), stream.rotate_bridge_token()
        super().save_model(request, stream, form, change)
        self._show_once(request, stream, key=key, token=token)

    @admin.action(description="Rotate the stream key (shows the new key once)")
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Stream]) -> None:
        for stream in queryset:
            key = stream.rotate_key()
            stream.save(update_fields=["key_hash"])
            self._show_once(request, stream, key=key)

    @admin.action(description="Rotate the bridge API token (shows the new token once)")
    def rotate_bridge_token(self, request: HttpRequest, queryset: QuerySet[Stream]) -> None:
        for stream in queryset:
            token = stream.rotate_bridge_token()
            stream.save(update_fields=["bridge_token_hash"])
            self._show_once(request, stream, token=token)

    def _show_once(self, request: HttpRequest, stream: Stream, key: str = "", token: str = "") -> None:
        if key:
            overlay = request.build_absolute_uri(f"/overlay/{stream.slug}/?key={key}")
            self.message_user(
                request,
                format_html(
                    "New key for {}: <code>{}</code> — overlay URL <code>{}</code>. "
                    "Copy it now: it is not stored and will not be shown again.",
                    stream,
                    key,
                    overlay,
                ),
                messages.WARNING,
            )
        if token:
            self.message_user(
                request,
                format_html(
                    "New bridge token for {}: <code>{}</code> (header <code>Authorization: Bearer …</code>). "
                    "Copy it now: it will not be shown again.",
                    stream,
                    token,
                ),
                messages.WARNING,
            )


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["name", "updated_at"]
    search_fields = ["name", "text"]


@admin.register(VoicePreset)
class VoicePresetAdmin(admin.ModelAdmin):
    list_display = ["name", "engine", "voice", "speed", "format", "language"]
    list_filter = ["engine", "format"]


class AnswerInline(admin.TabularInline):
    model = Answer
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["status", "text", "timings", "model", "error", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _move(questions: QuerySet[Question], from_statuses: tuple[str, ...], to_status: str) -> int:
    """Move the questions that are in one of `from_statuses` to `to_status`, telling the dashboards."""
    changed = [q for q in questions if q.status in from_statuses]
    for question in changed:
        question.status = to_status
        question.save(update_fields=["status", "updated_at"])
        intake.announce(question)
    return len(changed)


def _again(questions: list[Question]) -> int:
    copies = [moderation.answer_again(q) for q in questions]
    for copy in copies:
        intake.announce(copy)  # tells the dashboards, and kicks the stream's worker
    return len(copies)


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["text_preview", "viewer_name", "stream", "status", "source", "priority", "created_at"]
    list_filter = ["stream", "status", "source", "created_at"]
    search_fields = ["text", "viewer_name"]
    date_hierarchy = "created_at"
    list_select_related = ["stream"]
    readonly_fields = ["source", "viewer_ip", "attempts", "worker", "created_at", "started_at",
                       "heartbeat_at", "finished_at"]  # fmt: skip
    inlines = [AnswerInline]
    actions = ["approve", "reject", "answer_again"]

    @admin.display(description="Question")
    def text_preview(self, question: Question) -> str:
        return question.text[:100]

    @admin.action(description="Approve (queue for answering)")
    def approve(self, request: HttpRequest, queryset: QuerySet[Question]) -> None:
        moved = _move(queryset, (Question.Status.PENDING, Question.Status.REJECTED), Question.Status.APPROVED)
        self.message_user(request, f"Approved {moved} question(s).")

    @admin.action(description="Reject")
    def reject(self, request: HttpRequest, queryset: QuerySet[Question]) -> None:
        moved = _move(queryset, moderation.QUEUED, Question.Status.REJECTED)
        self.message_user(request, f"Rejected {moved} question(s).")

    @admin.action(description="Answer again (queue an approved copy)")
    def answer_again(self, request: HttpRequest, queryset: QuerySet[Question]) -> None:
        self.message_user(request, f"Queued {_again(list(queryset))} question(s) again.")


class AnswerChunkInline(admin.TabularInline):
    model = AnswerChunk
    extra = 0
    can_delete = False
    fields = ["seq", "caption", "duration", "audio_size", "audio_format", "sample_rate", "timings", "error"]
    readonly_fields = fields

    @admin.display(description="Audio")
    def audio_size(self, chunk: AnswerChunk) -> str:
        return f"{len(chunk.audio or b'')} bytes" if chunk.audio else "none"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ["__str__", "question", "status", "model", "created_at"]
    list_filter = ["status", "question__stream", "created_at"]
    search_fields = ["text", "question__text", "question__viewer_name"]
    list_select_related = ["question"]
    fields = ["question", "status", "text", "prompt_text", "voice", "model", "timings", "error",
              "created_at", "finished_at", "caption_files"]  # fmt: skip
    readonly_fields = fields
    inlines = [AnswerChunkInline]
    actions = ["answer_again", "replay_on_overlay", "export_vtt", "export_srt"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        captions_view = self.admin_site.admin_view(self.captions_file)
        return [
            path("<int:answer_id>/captions.<str:kind>", captions_view, name="answers_answer_captions"),
            *super().get_urls(),
        ]

    @admin.display(description="Captions")
    def caption_files(self, answer: Answer) -> str:
        if not answer.pk:
            return "—"
        return format_html(
            '<a href="{}">WebVTT</a> · <a href="{}">SRT</a>',
            reverse("admin:answers_answer_captions", args=[answer.pk, "vtt"]),
            reverse("admin:answers_answer_captions", args=[answer.pk, "srt"]),
        )

    def captions_file(self, request: HttpRequest, answer_id: int, kind: str) -> HttpResponse:
        answer = get_object_or_404(Answer, pk=answer_id)
        if not self.has_view_permission(request, answer) or kind not in ("vtt", "srt"):
            return HttpResponse(status=404)
        return caption_response([answer], kind)

    @admin.action(description="Answer again (queue an approved copy of the question)")
    def answer_again(self, request: HttpRequest, queryset: QuerySet[Answer]) -> None:
        questions = [answer.question for answer in queryset.select_related("question")]
        self.message_user(request, f"Queued {_again(questions)} question(s) again.")

    @admin.action(description="Replay on the stream's overlay")
    def replay_on_overlay(self, request: HttpRequest, queryset: QuerySet[Answer]) -> None:
        for answer in queryset.order_by("created_at"):
            try:
                replay.replay(answer.pk)
            except replay.NothingToReplay:
                self.message_user(request, f"{answer} has no stored audio to replay.", messages.WARNING)
            except Exception as exc:
                self.message_user(request, f"Could not replay {answer}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Replaying {answer} on the overlay.")

    @admin.action(description="Export captions (WebVTT)")
    def export_vtt(self, request: HttpRequest, queryset: QuerySet[Answer]) -> HttpResponse:
        return caption_response(list(queryset.order_by("created_at")), "vtt")

    @admin.action(description="Export captions (SRT)")
    def export_srt(self, request: HttpRequest, queryset: QuerySet[Answer]) -> HttpResponse:
        return caption_response(list(queryset.order_by("created_at")), "srt")


def caption_response(answers: list[Answer], kind: str) -> HttpResponse:
    """One answer: its caption file. Several: their cues one after another, as if replayed in order."""
    chunks: list[AnswerChunk] = []
    offset = 0
    for answer in answers:
        for chunk in answer.chunks.all():
            chunk.seq += offset
            chunks.append(chunk)
        offset = max((c.seq for c in chunks), default=-1) + 1
    text = captions.to_vtt(chunks) if kind == "vtt" else captions.to_srt(chunks)
    name = f"answer-{answers[0].pk}" if len(answers) == 1 else f"answers-{len(answers)}"
    content_type = "text/vtt" if kind == "vtt" else "application/x-subrip"
    response = HttpResponse(text, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response
