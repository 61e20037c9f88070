"""The Realtime event schema (``app.voice.realtime_schema``) on its own: no server, no models."""

from __future__ import annotations

import json

import pytest
from realtime_events import event_mismatch

from app.voice.realtime_schema import (AudioAppend, ItemCreate, RealtimeError, ResponseCreate, SessionConfig,
                                       SessionUpdate, parse_client_event)


def parse(event, max_text_chars: int = 100):
    return parse_client_event(event if isinstance(event, str) else json.dumps(event), max_text_chars=max_text_chars)


def refusal(event, **kwargs) -> tuple[str, str | None]:
    with pytest.raises(RealtimeError) as refused:
        parse(event, **kwargs)
    assert str(refused.value)
    return refused.value.code, refused.value.param


def config() -> SessionConfig:
    return SessionConfig(model="gemma", instructions="Be brief.", voice="default")


@pytest.mark.parametrize("event, code, param", [
    ("not json {", "invalid_json", None),
    ("[1, 2]", "invalid_event", "type"),
    ({"no": "type"}, "invalid_event", "type"),
    ({"type": "dance"}, "invalid_event", "type"),
    ({"type": "session.update"}, "missing_required_parameter", "session"),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value", "session.type"),
    ({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
     "invalid_value", "session.audio.input.format.rate"),
    ({"type": "session.update", "session": {"input_audio_format": "mp3"}}, "invalid_value", "session.input_audio_format"),
    ({"type": "session.update", "session": {"max_output_tokens": 0}}, "invalid_value", "session.max_output_tokens"),
    ({"type": "session.update", "session": {"max_response_output_tokens": True}}, "invalid_value",
     "session.max_response_output_tokens"),
    ({"type": "session.update", "session": {"temperature": 2.5}}, "invalid_value", "session.temperature"),
    ({"type": "session.update", "session": {"output_modalities": []}}, "invalid_value", "session.output_modalities"),
    ({"type": "session.update", "session": {"instructions": "x" * 101}}, "invalid_value", "session.instructions"),
    ({"type": "session.update", "session": {"instructions": "\ud800"}}, "bad_text", "session.instructions"),
    ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "create_response": False}}}}}, "invalid_value",
     "session.audio.input.turn_detection.create_response"),
    ({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}},
     "invalid_value", "session.turn_detection.interrupt_response"),
    ({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
     "invalid_value", "session.turn_detection.threshold"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
    ({"type": "conversation.item.create", "item": {"type": "function_call", "name": "f", "arguments": "{}"}},
     "invalid_value", "item.type"),
    ({"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "input_text", "text": "\ud800"}]}},
     "bad_text", "item.content[0].text"),
    ({"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "output_text", "text": "x"}]}},
     "invalid_value", "item"),
    ({"type": "conversation.item.create", "item": {"role": "assistant", "content": [{"type": "input_audio",
                                                                                    "audio": "AAAA"}]}},
     "invalid_value", "item"),
    ({"type": "conversation.item.create", "item": {"role": "user", "content": []}}, "invalid_value", "item.content"),
    ({"type": "conversation.item.create", "item": {"role": "user", "content": [{"type": "input_text", "text": "x"}] * 101}},
     "invalid_value", "item"),
    ({"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": -1}, "invalid_value", "audio_end_ms"),
    ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 1, "audio_end_ms": 0}, "invalid_value",
     "content_index"),
    ({"type": "response.create", "response": {"conversation": "none"}}, "invalid_value", "response.conversation"),
    ({"type": "response.create", "response": {"input": []}}, "invalid_value", "response.input"),
])
def test_bad_events_are_refused_with_the_field_that_is_wrong(event, code, param):
    assert refusal(event) == (code, param)


def test_good_events_parse():
    assert isinstance(parse({"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"}), AudioAppend)
    item = parse({"type": "conversation.item.create", "previous_item_id": "root", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                       {"type": "input_audio", "audio": "AAAA"}]}})
    assert isinstance(item, ItemCreate) and item.item.texts == ["hi"] and item.item.audio == ["AAAA"]
    response = parse({"type": "response.create", "response": {"output_modalities": ["text"], "metadata": {"a": 1},
                                                              "audio": {"output": {"voice": {"id": "v"}}}}})
    assert isinstance(response, ResponseCreate) and response.response.audio.output.voice == "v"


def test_ga_and_beta_session_shapes_give_the_same_configuration():
    ga = parse({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Hi.", "output_modalities": ["text"], "max_output_tokens": 50,
        "tools": [], "tracing": None, "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1", "language": "en"},
                      "noise_reduction": {"type": "near_field"},
                      "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 400,
                                         "create_response": True, "interrupt_response": True}},
            "output": {"format": {"type": "audio/pcma"}, "voice": "marin", "speed": 1.0}}}})
    beta = parse({"type": "session.update", "session": {
        "instructions": "Hi.", "modalities": ["text"], "max_response_output_tokens": 50,
        "input_audio_format": "g711_ulaw", "output_audio_format": "g711_alaw", "voice": "marin",
        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 400}}})
    assert isinstance(ga, SessionUpdate) and isinstance(beta, SessionUpdate)
    one = config().updated(ga.session, default_instructions="default")
    other = config().updated(beta.session, default_instructions="default")
    assert one == other
    assert (one.input_format, one.output_format, one.output_modalities, one.voice) == \
        ("audio/pcmu", "audio/pcma", ("text",), "marin")
    assert (one.threshold, one.silence_ms, one.transcription["language"], one.max_output_tokens) == (0.6, 400, "en", 50)


def test_absent_fields_keep_the_configuration_and_null_turns_things_off():
    start = config()
    kept = start.updated(parse({"type": "session.update", "session": {"type": "realtime"}}).session,
                         default_instructions="default")
    assert kept == start
    off = start.updated(parse({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}},
                                                                    "instructions": ""}}).session,
                        default_instructions="default")
    assert off.vad is False and off.turn_detection() is None and off.instructions == "default"


@pytest.mark.parametrize("beta", [False, True])
def test_session_objects(beta):
    session = config().beta("sess_1", 120) if beta else config().ga("sess_1", 120)
    if beta:
        assert session["input_audio_format"] == "pcm16" and session["turn_detection"]["create_response"] is True
    else:
        assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is True
    for kind in ("session.created", "session.updated"):  # the SDK's own models of the events, field for field
        assert event_mismatch({"type": kind, "event_id": "e", "session": session}, beta=beta) is None
