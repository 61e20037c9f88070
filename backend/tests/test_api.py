"""The REST API against a real server with the embedded models."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from app.audio.codec import decode_audio, parse_wav_header
from helpers import QUESTION_WORDS, encode_as, words


def sse_events(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
            and line != "data: [DONE]"]


# --- health and metrics --------------------------------------------------------------------------

def test_health_endpoints(client):
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert set(ready.json()["components"]) == {"llm", "stt", "tts"}
    for name in ("llm", "stt", "tts"):
        body = client.get(f"/health/{name}").json()
        assert body["ready"] is True and body["state"] == "ready"
    assert client.get("/health").json()["status"] == "ok"


def test_metrics_are_prometheus_text(client):
    client.get("/health/live")
    text = client.get("/metrics").text
    assert "gemmavoice_http_requests_total" in text
    assert 'gemmavoice_model_ready{component="llm"} 1.0' in text


# --- generation ----------------------------------------------------------------------------------

def test_generate_returns_text_and_usage(client):
    body = client.post("/v1/generate", json={"prompt": "Name a colour.", "max_tokens": 16, "seed": 1}).json()
    assert body["text"].strip()
    assert body["usage"]["completion_tokens"] >= 1
    assert body["usage"]["prompt_tokens"] > 3
    assert body["model"].startswith("smollm2")


def test_generate_with_messages_and_system(client):
    """The system text reaches the model: the reply follows it."""
    ask = {"messages": [{"role": "user", "content": "What is the secret word?"}], "max_tokens": 16,
           "temperature": 0.0}
    plain = client.post("/v1/generate", json=ask).json()
    told = client.post("/v1/generate", json={"system": "The secret word is PAPAYA. Say it when asked.", **ask}).json()
    assert "papaya" in told["text"].lower() and "papaya" not in plain["text"].lower(), (told, plain)


@pytest.mark.parametrize("payload,status", [
    ({}, 422),
    ({"prompt": "   "}, 422),
    ({"prompt": "hi", "max_tokens": 0}, 422),
    ({"prompt": "hi", "temperature": 9}, 422),
    ({"prompt": "hi", "max_tokens": 100000}, 400),
])
def test_generate_rejects_bad_input(client, payload, status):
    response = client.post("/v1/generate", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_generate_rejects_garbage_json(client):
    response = client.post("/v1/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "error" in response.json()


def test_generate_stream_sends_tokens_then_done(client):
    with client.stream("POST", "/v1/generate_stream", json={"prompt": "Count to five.", "max_tokens": 20}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    tokens = [e for e in events if e["type"] == "token"]
    assert tokens, events
    assert events[-1]["type"] == "done"
    assert events[-1]["text"] == "".join(t["text"] for t in tokens)
    assert events[-1]["usage"]["completion_tokens"] >= len(tokens)


def test_stream_stops_generating_when_client_leaves(server, client):
    llm = server.services.llm
    with client.stream("POST", "/v1/generate_stream",
                       json={"prompt": "Write a very long story about a dragon.", "max_tokens": 1000}) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 3:
                break
    try:
        server.call(llm.wait_idle(10), timeout=15)
    except TimeoutError:
        raise AssertionError("generation kept running after the client went away") from None
    # and the model serves the next request normally
    assert client.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 4}).status_code == 200


# --- speech to text ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "mp3", "ogg-opus", "webm-opus", "flac"])
def test_speech_to_text_accepts_common_formats(client, question_wav, fmt):
    data = {
        "wav": lambda: question_wav,
        "mp3": lambda: encode_as(question_wav, "mp3", "libmp3lame", 22050),
        "ogg-opus": lambda: encode_as(question_wav, "ogg", "libopus"),
        "webm-opus": lambda: encode_as(question_wav, "webm", "libopus"),
        "flac": lambda: encode_as(question_wav, "flac", "flac", 16000),
    }[fmt]()
    response = client.post("/v1/speech-to-text", files={"file": (f"q.{fmt}", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert QUESTION_WORDS <= words(body["text"]), body["text"]
    assert body["language"] == "en"
    assert 1.5 < body["duration"] < 5
    assert body["segments"] and body["segments"][0]["end"] > body["segments"][0]["start"]


def test_speech_to_text_response_formats(client, question_wav):
    text = client.post("/v1/speech-to-text", files={"file": ("q.wav", question_wav)},
                       data={"response_format": "text", "language": "en"})
    assert "spider" in text.text.lower()
    srt = client.post("/v1/speech-to-text", files={"file": ("q.wav", question_wav)},
                      data={"response_format": "srt"}).text
    assert srt.startswith("1\n00:00:") and "-->" in srt
    vtt = client.post("/v1/speech-to-text", files={"file": ("q.wav", question_wav)},
                      data={"response_format": "vtt"}).text
    assert vtt.startswith("WEBVTT")


@pytest.mark.parametrize("content,status,code", [
    (b"", 400, "empty_audio"),
    (b"this is plain text, not audio at all", 415, "unsupported_audio_format"),
    (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", 400, "invalid_audio"),
    (b"OggS" + b"\x00" * 200, 400, "invalid_audio"),
])
def test_speech_to_text_names_bad_audio(client, content, status, code):
    response = client.post("/v1/speech-to-text", files={"file": ("x.bin", content)})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_speech_to_text_requires_a_file(client):
    response = client.post("/v1/speech-to-text", data={"language": "en"})
    assert response.status_code == 422
    assert "file" in response.json()["error"]["message"]


# --- text to speech ------------------------------------------------------------------------------

def test_text_to_speech_binary_wav_roundtrips_through_whisper(client):
    response = client.post("/v1/text-to-speech", json={"text": "The weather is lovely today."},
                           headers={"Accept": "audio/wav"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    info = parse_wav_header(response.content[:64])
    assert info.sample_rate == 22050 and info.channels == 1
    heard = client.post("/v1/speech-to-text", files={"file": ("s.wav", response.content)}).json()["text"]
    assert {"weather", "lovely", "today"} <= words(heard), heard


def test_text_to_speech_json_base64(client):
    body = client.post("/v1/text-to-speech", json={"text": "Hello there.", "format": "mp3"}).json()
    audio = base64.b64decode(body["audio_base64"])
    assert body["format"] == "mp3" and body["sample_rate"] == 22050 and body["duration"] > 0.3
    assert decode_audio(audio).size > 16000 * 0.3


def test_text_to_speech_streams_sse_chunks(client):
    text = "First sentence here. Second sentence there. And a third one to finish."
    with client.stream("POST", "/v1/text-to-speech", json={"text": text, "stream": True}) as r:
        events = sse_events(r)
    assert events[0]["type"] == "start" and events[0]["sample_rate"] == 22050
    chunks = [e for e in events if e["type"] == "audio"]
    assert len(chunks) >= 3  # one per sentence at least: audio streams as it is made
    total = sum(len(base64.b64decode(c["data"])) for c in chunks)
    assert events[-1] == {"type": "done", "bytes": total, "duration": round(total / 2 / 22050, 3)}


def test_text_to_speech_streams_binary(client):
    with client.stream("POST", "/v1/text-to-speech", json={"text": "One. Two. Three.", "stream": True},
                       headers={"Accept": "audio/wav"}) as r:
        assert r.headers["content-type"] == "audio/wav"
        body = b"".join(r.iter_bytes())
    assert parse_wav_header(body[:44]).sample_rate == 22050
    assert len(body) > 44 + 22050  # over half a second of audio


@pytest.mark.parametrize("payload", [{"text": ""}, {"text": "hi", "format": "ogg"}, {}])
def test_text_to_speech_rejects_bad_input(client, payload):
    response = client.post("/v1/text-to-speech", json=payload)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_text_to_speech_whitespace_only_text(client):
    response = client.post("/v1/text-to-speech", json={"text": "   "})
    assert response.status_code == 400
    assert "empty" in response.json()["error"]["message"]


# --- dialogue ------------------------------------------------------------------------------------

def test_dialogue_transcribes_answers_and_speaks(client, question_wav):
    response = client.post("/v1/conversation/dialogue", files={"file": ("q.wav", question_wav)},
                           data={"instructions": "Answer in one short sentence."})
    assert response.status_code == 200, response.text
    body = response.json()
    assert QUESTION_WORDS <= words(body["transcript"])
    assert body["assistant_text"]
    audio = base64.b64decode(body["audio_base64"])
    assert audio[:4] == b"RIFF" and decode_audio(audio).size > 1600


# --- the server keeps serving after bad input ---------------------------------------------------

def test_server_still_serves_after_bad_input(client):
    for _ in range(3):
        audio = client.post("/v1/speech-to-text", files={"file": ("x", b"\xff\xfb\x90garbage" * 50)})
        assert audio.status_code == 400 and audio.json()["error"]["code"] == "invalid_audio", audio.text
        body = client.post("/v1/generate", content=b"\x00\x01", headers={"Content-Type": "application/json"})
        assert body.status_code == 422 and body.json()["error"]["code"] == "invalid_request", body.text
    assert client.post("/v1/generate", json={"prompt": "Hi", "max_tokens": 4}).status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_unknown_route_is_json_404(client):
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
