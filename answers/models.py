"""What LiveQA keeps: streams, prompts, voices, questions and the answers that were spoken."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.text import slugify


def hash_secret(raw: str) -> str:
    """Keys are long random strings, so an unsalted SHA-256 is enough to make the stored value useless."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Prompt(models.Model):
    name = models.CharField(max_length=100, unique=True)
    text = models.TextField(help_text="The system prompt given to the LLM.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VoicePreset(models.Model):
    class Engine(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        PIPER = "piper", "Piper (offline)"
        ESPEAK = "espeak", "espeak-ng (offline)"

    class Format(models.TextChoices):
        MP3 = "mp3"
        WAV = "wav"
        PCM = "pcm"
        OPUS = "opus"

    name = models.CharField(max_length=100, unique=True)
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.OPENAI)
    voice = models.CharField(max_length=200, help_text="Engine voice: alloy, en_US-joe-medium, cmn, ...")
    speed = models.FloatField(default=1.0, validators=[MinValueValidator(0.25), MaxValueValidator(4.0)])
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.MP3)
    language = models.CharField(max_length=10, default="en")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "name": self.voice,
            "speed": self.speed,
            "format": self.format,
            "language": self.language,
        }


class Stream(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    bridge_token_hash = models.CharField(max_length=64, unique=True, editable=False)
    default_prompt = models.ForeignKey(Prompt, null=True, blank=True, on_delete=models.SET_NULL)
    default_voice = models.ForeignKey(VoicePreset, null=True, blank=True, on_delete=models.SET_NULL)
    auto_approve = models.BooleanField(default=False)
    hold_answers_for_review = models.BooleanField(
        default=False, help_text="A moderator approves or edits each answer's text before it is spoken."
    )
    max_question_chars = models.PositiveIntegerField(default=500)
    questions_per_viewer_per_minute = models.PositiveIntegerField(default=3)
    moderators = models.ManyToManyField("auth.Group", blank=True, related_name="moderated_streams")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.slug:
            self.slug = slugify(self.name)[:100] or "stream"
        if not self.key_hash:
            self.rotate_key()
        if not self.bridge_token_hash:
            self.rotate_bridge_token()
        super().save(*args, **kwargs)

    def rotate_key(self) -> str:
        """Set a fresh stream key and return it: the only time it can be read."""
        key = new_secret()
        self.key_hash = hash_secret(key)
        return key

    def rotate_bridge_token(self) -> str:
        token = new_secret()
        self.bridge_token_hash = hash_secret(token)
        return token

    def check_key(self, raw: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_secret(raw or ""))

    def check_bridge_token(self, raw: str) -> bool:
        return hmac.compare_digest(self.bridge_token_hash, hash_secret(raw or ""))

    def is_moderator(self, user: object) -> bool:
        if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
            return False
        if getattr(user, "is_staff", False):
            return True
        return self.moderators.filter(user=user).exists()  # type: ignore[misc]

    @property
    def overlay_group(self) -> str:
        return f"stream.{self.pk}.overlay"

    @property
    def dashboard_group(self) -> str:
        return f"stream.{self.pk}.dashboard"


class Question(models.Model):
    class Source(models.TextChoices):
        ASK_PAGE = "ask", "Ask page"
        API = "api", "API"
        LIVE = "live", "/live/answer"
        DASHBOARD = "dashboard", "Dashboard"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        ANSWERING = "answering"
        HELD = "held", "Held for review"  # its answer's text waits for a moderator; no worker owns it
        ANSWERED = "answered"
        FAILED = "failed"
        REJECTED = "rejected"
        SKIPPED = "skipped"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="questions")
    text = models.TextField()
    viewer_name = models.CharField(max_length=100, blank=True)
    viewer_ip = models.GenericIPAddressField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    priority = models.IntegerField(default=0)
    position = models.FloatField(default=0.0, help_text="Order among questions of equal priority.")
    # Per-question choices; empty means the stream's defaults.
    prompt = models.ForeignKey(Prompt, null=True, blank=True, on_delete=models.SET_NULL)
    voice = models.ForeignKey(VoicePreset, null=True, blank=True, on_delete=models.SET_NULL)
    prompt_override = models.TextField(blank=True)
    voice_override = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    # A /live/answer question asked on an idle connection is handed to a worker while it is being
    # stored: the worker claims it by this ticket once it is.
    ticket = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["stream", "status", "-priority", "position", "created_at"])]

    def __str__(self) -> str:
        return self.text[:80]


class Answer(models.Model):
    class Status(models.TextChoices):
        HELD = "held", "Held for review"
        SPEAKING = "speaking"
        DONE = "done"
        FAILED = "failed"

    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="answers")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SPEAKING)
    text = models.TextField(blank=True)
    prompt_text = models.TextField(blank=True, help_text="The system prompt actually used (a snapshot).")
    voice = models.JSONField(default=dict, help_text="The voice actually used (a snapshot).")
    model = models.CharField(max_length=200, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Answer {self.pk} to question {self.question_id}"


class AnswerChunk(models.Model):
    """One spoken piece of an answer, with its audio kept for replay and caption export."""

    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    caption = models.TextField()
    speech = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)
    audio = models.BinaryField(blank=True, default=b"")
    audio_format = models.CharField(max_length=10, blank=True)
    sample_rate = models.PositiveIntegerField(default=0)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds of audio, when known.")
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["answer", "seq"]
        constraints = [models.UniqueConstraint(fields=["answer", "seq"], name="unique_chunk_seq")]

    def __str__(self) -> str:
        return f"{self.seq}: {self.caption[:60]}"
