"""`python manage.py answerworker`: a worker process that answers questions from the channel layer."""

import asyncio
import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection

from liveqa.startup import freeze_startup_heap, run_event_loop

logger = logging.getLogger("answers.worker")


class Command(BaseCommand):
    help = "Answer questions handed over on the channel layer (run several for more capacity)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency", type=int, default=None,
            help=f"Answers in flight at once (default LIVEQA_WORKER_CONCURRENCY={settings.LIVEQA_WORKER_CONCURRENCY}).",
        )  # fmt: skip
        parser.add_argument("--channel", default=None, help="Worker channel (default LIVEQA_WORKER_CHANNEL).")

    def handle(self, *args, concurrency=None, channel=None, **options):
        if not settings.REDIS_URL:
            self.stderr.write(
                "REDIS_URL is not set: with the in-memory channel layer the web process answers questions "
                "itself, and a separate worker would never receive any. Set REDIS_URL to run workers."
            )
            raise SystemExit(2)
        self.wait_for_database()
        run_event_loop(self.serve(concurrency, channel))

    def wait_for_database(self):
        """A worker started before its database waits for it, saying why, instead of crash-looping."""
        delay = 1.0
        while True:
            try:
                connection.ensure_connection()
                connection.close()
                return
            except DatabaseError as exc:
                logger.error("database unavailable (%s); retrying in %.0fs", str(exc).strip(), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def serve(self, concurrency, channel):
        from answers.providers import pipeline
        from answers.workers import AnswerWorker

        worker = AnswerWorker(pipeline(), concurrency=concurrency, channel=channel)
        freeze_startup_heap()
        task = asyncio.create_task(worker.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            logger.info("answer worker stopped")
