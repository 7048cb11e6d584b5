"""`python manage.py createstream NAME`: a stream with a fresh key, and the URLs that use it."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from answers.models import Stream


class Command(BaseCommand):
    help = "Create a stream and print its answer, overlay, dashboard and ask URLs (the key is shown only now)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", default="")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where LiveQA is served.")
        parser.add_argument("--auto-approve", action="store_true")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, name, slug, base_url, auto_approve, json: bool = False, **options):
        slug = slug or slugify(name)
        if not slug:
            raise CommandError("The name needs at least one letter or digit (or pass --slug).")
        if Stream.objects.filter(slug=slug).exists():
            raise CommandError(f"A stream with slug {slug!r} exists already.")
        stream = Stream(name=name, slug=slug, auto_approve=auto_approve)
        key = stream.rotate_key()
        token = stream.rotate_bridge_token()
        stream.save()
        info = stream_urls(stream, key, token, base_url)
        if json:
            self.stdout.write(_json.dumps(info))
            return
        self.stdout.write(f"Stream {name!r} created. Keep these, the key is not shown again:")
        for label, value in info.items():
            self.stdout.write(f"  {label:14} {value}")


_json = json


def stream_urls(stream: Stream, key: str, bridge_token: str, base_url: str) -> dict[str, str]:
    base_url = base_url.rstrip("/")
    ws_base = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return {
        "slug": stream.slug,
        "key": key,
        "bridge_token": bridge_token,
        "answer_url": f"{ws_base}/live/answer?key={key}",
        "overlay_url": f"{base_url}/overlay/{stream.slug}/?key={key}",
        "dashboard_url": f"{base_url}/dashboard/{stream.slug}/",
        "ask_url": f"{base_url}/s/{stream.slug}/ask",
    }
