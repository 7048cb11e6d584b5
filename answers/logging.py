"""Log hygiene: stream keys and tokens never reach the logs."""

import logging
import re

_SECRET_QUERY = re.compile(r"((?:key|token|bridge_token|access_token)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Blanks `key=…`/`token=…` in query strings of any log record (daphne logs full request paths)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
