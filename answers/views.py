"""HTTP views: home and health, the viewers' ask page and bridge API, the moderators' dashboard and
the streamer's overlay."""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import intake, services
from .models import Prompt, Question, Stream, VoicePreset


def home(request: HttpRequest) -> HttpResponse:
    streams = Stream.objects.all() if request.user.is_staff else Stream.objects.none()
    return render(request, "answers/home.html", {"streams": streams})


def health(request: HttpRequest) -> JsonResponse:
    try:
        connection.ensure_connection()
    except DatabaseError:
        return JsonResponse({"ok": False, "database": "unavailable"}, status=503)
    return JsonResponse({"ok": True})


class AskForm(forms.Form):
    name = forms.CharField(label="Your name", max_length=intake.MAX_VIEWER_NAME, required=False)
    question = forms.CharField(label="Your question", widget=forms.Textarea(attrs={"rows": 4}))

    def __init__(self, *args: object, stream: Stream, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.fields["question"].max_length = stream.max_question_chars
        self.fields["question"].widget.attrs["maxlength"] = str(stream.max_question_chars)


def ask(request: HttpRequest, slug: str) -> HttpResponse:
    stream = get_object_or_404(Stream, slug=slug)
    status = 200
    if request.method == "POST":
        form = AskForm(request.POST, stream=stream)
        if form.is_valid():
            try:
                received = intake.receive(
                    stream,
                    form.cleaned_data["question"],
                    form.cleaned_data["name"],
                    source=Question.Source.ASK_PAGE,
                    viewer_ip=request.META.get("REMOTE_ADDR") or None,
                )
            except intake.IntakeError as exc:
                form.add_error("question", exc.message)
                status = exc.status
            else:
                if received.created:
                    messages.success(request, "Thanks! Your question is in the queue.")
                else:
                    messages.info(request, "You already asked that; it is in the queue.")
                return redirect("answers:ask", slug=stream.slug)
        else:
            status = 400
    else:
        form = AskForm(stream=stream)
    return render(request, "answers/ask.html", {"stream": stream, "form": form}, status=status)


def _api_error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


@csrf_exempt  # authenticated by a bearer token, never by cookies
@require_POST
def api_questions(request: HttpRequest, slug: str) -> JsonResponse:
    stream = Stream.objects.filter(slug=slug).first()
    if stream is None:
        return _api_error("not_found", "No such stream.", 404)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not stream.check_bridge_token(token.strip()):
        response = _api_error("unauthorized", "Send `Authorization: Bearer <bridge token>`.", 401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _api_error("invalid_json", "The body must be a JSON object.", 400)
    if not isinstance(body, dict):
        return _api_error("invalid_json", "The body must be a JSON object.", 400)
    try:
        received = intake.receive(
            stream,
            body.get("question", ""),
            body.get("viewer", ""),
            source=Question.Source.API,
            viewer_ip=request.META.get("REMOTE_ADDR") or None,
        )
    except intake.IntakeError as exc:
        response = _api_error(exc.code, exc.message, exc.status)
        if exc.status == 429:
            response["Retry-After"] = str(int(intake.RATE_WINDOW.total_seconds()))
        return response
    return JsonResponse(services.question_dict(received.question), status=201 if received.created else 200)


@login_required
def dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    stream = get_object_or_404(Stream, slug=slug)
    if not stream.is_moderator(request.user):
        raise PermissionDenied("You do not moderate this stream.")
    return render(
        request,
        "answers/dashboard.html",
        {"stream": stream, "prompts": Prompt.objects.all(), "voices": VoicePreset.objects.all()},
    )


def overlay(request: HttpRequest, slug: str) -> HttpResponse:
    key = request.GET.get("key", "")
    stream = services.stream_for_key(key, slug)
    if stream is None:
        return HttpResponseForbidden("A valid stream key is required.")
    response = render(request, "answers/overlay.html", {"stream": stream})
    response["Referrer-Policy"] = "no-referrer"  # the key is in this page's URL
    response["Cache-Control"] = "no-store"
    return response
