# One image for web (daphne) and worker (answerworker).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY liveqa liveqa
COPY answers answers
COPY templates templates
COPY manage.py ./
RUN pip install '.[offline]'

RUN SECRET_KEY=build-only python manage.py collectstatic --noinput -v 0
RUN useradd --system --home /app liveqa && chown -R liveqa /app
USER liveqa
EXPOSE 8000
CMD ["python", "-m", "liveqa.serve", "-b", "0.0.0.0", "-p", "8000", "liveqa.asgi:application"]
