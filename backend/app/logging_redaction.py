"""No secret in a log line: every log record is redacted as it is made.

Installed as the logging record factory (``logging.setLogRecordFactory``), so it holds for every logger and
every handler, also those configured later (uvicorn configures its own after the app is imported), including
``uvicorn.access`` and tracebacks. Redacted:

- the configured secrets themselves (``API_KEY``, ``ADMIN_API_KEY``, ``LIVEKIT_API_SECRET``,
  ``OPENAUDIO_API_KEY``), wherever they appear;
- ``api_key=...`` / ``token=...`` / ``secret=...`` / ``password=...`` query or form values (so the WebSocket's
  legacy ``?api_key=`` never reaches a log, whatever its value);
- ``Bearer ...`` / ``Basic ...`` credentials and ``X-API-Key: ...`` headers;
- the WebSocket's ``apikey.<key>`` subprotocol;
- JSON web tokens (LiveKit access tokens).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, quote_plus, urlparse

from app.config.settings import Settings

MASK = "***"
MIN_SECRET_LENGTH = 6

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b((?:x[-_])?api[-_]?key|access_token|token|secret|password|passwd)(=|%3D)[^&\s\"'#<>]+"),
     rf"\1\2{MASK}"),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{MASK}"),
    (re.compile(r"(?i)\b(x-api-key['\"]?\s*[:=,]\s*['\"]?)[^\s'\",}\]]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b(apikey(?:-b64)?\.)[^\s,;\"'\]]+"), rf"\1{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"), f"<jwt {MASK}>"),
]

# Loggers whose formatter reads record.args itself (uvicorn's AccessFormatter): only their arguments are redacted.
_KEEP_ARGS = {"uvicorn.access"}

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False
_previous_factory = None


def register_secret(value: str | None) -> None:
    """Redact this exact value (and its URL-encoded forms) from every log line from now on."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets.update({value, quote(value, safe=""), quote_plus(value)})


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    try:  # an object whose str() carries a secret (a URL, a request): log its redacted text instead
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ is the formatter's problem, as before
        return value
    cleaned = redact(text)
    return cleaned if cleaned != text else value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, (int, float)):
        record.msg = _redact_value(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_value(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}
    if record.args and record.name not in _KEEP_ARGS:
        # A secret split between the format and its arguments ("Bearer %s", key): redact the whole message.
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format is reported by the handler, as without redaction
            message = None
        if message is not None and redact(message) != message:
            record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters use exc_text when it is set: the traceback is written out once, redacted.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _factory(*args, **kwargs) -> logging.LogRecord:
    return redact_record(_previous_factory(*args, **kwargs))


def install_log_redaction(settings: Settings | None = None) -> None:
    """Register the settings' secrets and install the redacting record factory (once per process)."""
    global _installed, _previous_factory
    if settings is not None:
        for secret in (settings.api_key, settings.admin_api_key, settings.livekit_api_secret,
                       settings.openaudio_api_key, settings.llm_api_key, settings.stt_api_key, settings.tts_api_key):
            if secret is not None:
                register_secret(secret.get_secret_value())
        if settings.redis_url is not None:  # its password, and the whole URL that carries it
            url = settings.redis_url.get_secret_value()
            register_secret(urlparse(url).password)
            register_secret(url)
    with _lock:
        if _installed:
            return
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)
        _installed = True
