"""`python manage.py setupdemo`: an admin login and a demo stream, ready to use; prints where to go.

Idempotent: the admin's password and the demo stream's key are kept in a local state file (mode 600)
so every start prints the same URLs."""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from answers.management.commands.createstream import stream_urls
from answers.models import Stream


class Command(BaseCommand):
    help = "Create (once) an admin user and a demo stream, and print the dashboard, overlay and admin URLs."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--state", default=str(Path(settings.BASE_DIR) / ".liveqa" / "demo.json"))

    def handle(self, *args, base_url, state, **options):
        path = Path(state)
        saved = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()

        admin = User.objects.filter(username="admin").first()
        if admin is None or not admin.check_password(saved.get("password", "")):
            saved["password"] = saved.get("password") or secrets.token_urlsafe(12)
            admin = admin or User(username="admin", email="admin@localhost")
            admin.is_staff = admin.is_superuser = True
            admin.set_password(saved["password"])
            admin.save()

        stream = Stream.objects.filter(slug="demo").first()
        if stream is None:
            stream = Stream(name="Demo stream", slug="demo", auto_approve=True)
        if not saved.get("key") or not stream.check_key(saved["key"]) or "bridge_token" not in saved:
            saved["key"], saved["bridge_token"] = stream.rotate_key(), stream.rotate_bridge_token()
            stream.save()

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved))
        os.chmod(path, 0o600)

        urls = stream_urls(stream, saved["key"], saved["bridge_token"], base_url)
        self.stdout.write(
            "\nLiveQA is starting on the embedded default (SmolLM2-135M + Piper/espeak-ng, no API key).\n"
            if settings.LIVEQA_LLM_BACKEND == "local"
            else f"\nLiveQA is starting with {settings.OPENAI_BASE_URL or 'OpenAI'} ({settings.LIVEQA_LLM_MODEL}).\n"
        )
        lines = [
            ("Dashboard", urls["dashboard_url"]),
            ("Overlay (OBS)", urls["overlay_url"]),
            ("Ask page", urls["ask_url"]),
            ("Answer socket", urls["answer_url"]),
            ("Admin", f"{base_url.rstrip('/')}/admin/"),
            ("Login", f"admin / {saved['password']}"),
        ]
        for label, value in lines:
            self.stdout.write(f"  {label:14} {value}")
        self.stdout.write("")
