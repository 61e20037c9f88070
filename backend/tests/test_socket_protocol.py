"""The voice WebSocket's protocol has one source, ``app.voice.socket_protocol``: the web client's TypeScript types are
generated from it and must not drift, and client frames are refused as the protocol says.

That the events a real conversation sends are the models' own is checked by every test in
``test_conversation_ws.py`` (its client validates each event it receives).
"""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.voice.socket_protocol import (ConfigMessage, FrameError, MetricsEvent, TextMessage, TranscriptEvent,
                                       event_json, json_schema, parse_client_message)

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
GENERATED = FRONTEND / "src" / "api" / "socketProtocol.generated.ts"
REGENERATE = "cd frontend && npm run protocol:generate"


def generate_types(schema: dict) -> str:
    """The TypeScript the frontend's generator (json-schema-to-typescript) makes of ``schema``."""
    node = shutil.which("node")
    assert node, "node is needed to generate the web client's protocol types"
    assert (FRONTEND / "node_modules" / "json-schema-to-typescript").is_dir(), \
        "json-schema-to-typescript is not installed: cd frontend && npm ci"
    result = subprocess.run([node, "scripts/socket-protocol-types.mjs", "--stdin", "--stdout"], cwd=FRONTEND,
                            input=json.dumps(schema), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_typescript_types_are_generated_from_the_models():
    committed = GENERATED.read_text()
    generated = generate_types(json_schema())
    if generated != committed:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True),
                                            "committed", "from the models", n=1))
        pytest.fail(f"{GENERATED.relative_to(FRONTEND.parent)} is out of date with app/voice/socket_protocol.py; "
                    f"regenerate it: {REGENERATE}\n{diff[:3000]}")


def test_every_event_type_is_in_the_typescript_union():
    schema = json_schema()
    server = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["$defs"]["ServerEvent"]["oneOf"]}
    types = {schema["$defs"][name]["properties"]["type"]["const"] for name in server}
    assert {"ready", "config", "vad", "transcript", "text", "response_end", "interrupted", "playback", "turn_cut",
            "metrics", "error"} == types
    ts = GENERATED.read_text()
    for name in server:
        assert f"export interface {name} " in ts and f"| {name}" in ts, name


@pytest.mark.parametrize("frame, code", [
    ("not json {", "bad_frame"),
    ('{"no": "type"}', "bad_frame"),
    ("[1, 2]", "bad_frame"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "text", "text": "   "}', "empty_text"),
    ('{"type": "text"}', "empty_text"),
    ('{"type": "text", "text": 5}', "empty_text"),
    ('{"type": "text", "text": "\\ud800"}', "bad_text"),
    ('{"type": "text", "text": "' + "x" * 201 + '"}', "text_too_long"),
    ('{"type": "audio"}', "bad_frame"),
    ('{"type": "audio", "data": ""}', "bad_frame"),
    ('{"type": "config", "input_sample_rate": 12345}', "bad_config"),
    ('{"type": "config", "input_sample_rate": true}', "bad_config"),
    ('{"type": "config", "vad": "yes"}', "bad_config"),
    ('{"type": "config", "instructions": "' + "x" * 201 + '"}', "bad_config"),
    ('{"type": "config", "instructions": "\\udfff"}', "bad_text"),
    ('{"type": "config", "voice": 5}', "bad_config"),
    ('{"type": "config", "language": ["en"]}', "bad_config"),
])
def test_refused_frames_get_their_codes(frame, code):
    with pytest.raises(FrameError) as refused:
        parse_client_message(frame, max_text_chars=200)
    assert refused.value.code == code, str(refused.value)


def test_good_frames_parse_and_unknown_fields_are_ignored():
    config = parse_client_message('{"type": "config", "vad": false, "input_sample_rate": 48000, "extra": 1}',
                                  max_text_chars=200)
    assert isinstance(config, ConfigMessage) and config.vad is False and config.input_sample_rate == 48000
    assert config.model_fields_set == {"type", "vad", "input_sample_rate"}
    assert isinstance(parse_client_message('{"type": "text", "text": "Hi"}', max_text_chars=200), TextMessage)


def test_events_on_the_wire():
    """Fields with a default of None are optional: sent when given (null too), else left out; the rest always."""
    assert event_json(TranscriptEvent(text="hi", language=None)) == {
        "type": "transcript", "role": "user", "text": "hi", "final": True, "language": None}
    base = dict(turn=1, llm_first_token_ms=1.0, first_sentence_ms=None, tts_first_audio_ms=2.0,
                reply_first_audio_ms=3.0, reply_audio_seconds=1.5)
    assert "stt_ms" not in event_json(MetricsEvent(source="text", **base))
    assert event_json(MetricsEvent(source="voice", stt_ms=None, **base))["stt_ms"] is None
