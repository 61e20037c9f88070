"""Every server event a Realtime test receives, checked against the ``openai`` package's own event models: the GA
API's (``openai.types.realtime``), or the beta API's (``openai.types.beta.realtime``) for sessions opened with
``OpenAI-Beta: realtime=v1``.

The SDK's models accept fields they do not declare (pydantic ``extra="allow"``), so a check that only parses would
let a misspelt or invented field through: ``event_mismatch`` also reports every field the models do not declare.
Two places where the SDK's event models are narrower than the API they describe, each checked against the SDK's
own model of the thing instead:

- GA ``session.created`` / ``session.updated``: the SDK types ``session`` as a session *request*, which has no
  ``id``, ``object`` or ``expires_at``; the API sends the session object, the SDK's ``RealtimeSessionCreateResponse``.
- beta ``session.model``: the beta SDK's ``Session.model`` is a closed list of OpenAI's model names; any other
  server names its own model (``gemma-local``), so there it need only be text.
"""

from __future__ import annotations

import typing

from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.beta.realtime.session import Session as BetaSession
from openai.types.realtime import RealtimeServerEvent as ServerEvent
from openai.types.realtime.realtime_session_create_response import RealtimeSessionCreateResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

GA_EVENT = TypeAdapter(ServerEvent)
BETA_EVENT = TypeAdapter(BetaServerEvent)
SESSION_EVENTS = ("session.created", "session.updated")
BETA_MODELS = typing.get_args(typing.get_args(BetaSession.model_fields["model"].annotation)[0])


def event_mismatch(event: dict, *, beta: bool = False) -> str | None:
    """None when ``event`` is one of the API's server events, field for field; else what is wrong with it."""
    if not isinstance(event, dict):
        return f"not an event: {event!r}"
    kind = event.get("type")
    session = event.get("session") if kind in SESSION_EVENTS and isinstance(event.get("session"), dict) else None
    checked = event
    if beta and session is not None and session.get("model") not in BETA_MODELS:
        if not isinstance(session.get("model"), str):
            return f"{kind}: session.model is not text: {session.get('model')!r}"
        checked = {**event, "session": {**session, "model": BETA_MODELS[0]}}
    try:
        parsed = (BETA_EVENT if beta else GA_EVENT).validate_python(checked)
    except ValidationError as exc:
        return f"{kind}: {str(exc)[:800]}"
    if parsed.type != kind:
        return f"{kind} parsed as {parsed.type}"
    unknown = [path for path in _unknown_fields(parsed, kind) if not (session is not None and not beta
                                                                      and path.startswith(f"{kind}.session."))]
    if session is not None and not beta:
        try:
            unknown += _unknown_fields(RealtimeSessionCreateResponse.model_validate(session), f"{kind}.session")
        except ValidationError as exc:
            return f"{kind}: the session is not a session object: {str(exc)[:800]}"
    return f"{kind}: fields the {'beta' if beta else 'GA'} API does not have: {unknown}" if unknown else None


def _unknown_fields(value, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += _unknown_fields(item, f"{path}[{i}]")
    return found
