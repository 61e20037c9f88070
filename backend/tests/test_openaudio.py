"""OpenAudioService against FakeOpenAudioServer (a test double of the fish-speech API that returns real speech)."""

from __future__ import annotations

import numpy as np
import pytest
from tenacity import wait_none

from app.audio.codec import pcm16_to_float, resample_pcm
from app.config.settings import Settings
from app.services.base import UpstreamError
from app.services.local_tts import LocalTTSService
from app.services.openaudio import OpenAudioService, ReferenceAudio
from app.services.container import create_tts_engine
from helpers import free_port, words
from doubles.openaudio_server import FIELDS, FakeOpenAudioServer


@pytest.fixture(scope="module")
def fake_server(server):
    fake = FakeOpenAudioServer(server.services.tts.voice, api_key="fish-key").start(free_port())
    yield fake
    fake.stop()


def make_service(fake, **overrides) -> OpenAudioService:
    settings = Settings(app_env="test", openaudio_url=fake.url, openaudio_api_key="fish-key",
                        openaudio_reference_id="narrator", **overrides)
    return OpenAudioService(settings)


def test_engine_choice_follows_settings():
    assert create_tts_engine(Settings(app_env="test")).engine == "local-piper"
    assert create_tts_engine(Settings(app_env="test", openaudio_url="http://x:8080")).engine == "openaudio"
    assert create_tts_engine(Settings(app_env="test", openaudio_url="http://x:8080", tts_engine="local")).engine \
        == "local-piper"


async def test_streams_real_speech(fake_server, server):
    service = make_service(fake_server)
    await service.start()
    assert service.state == "ready"
    chunks = [c async for c in service.stream("The quick brown fox jumps. Over the lazy dog.")]
    await service.close()
    assert len(chunks) > 2  # audio arrives in pieces as the server streams it
    assert all(len(c) % 2 == 0 for c in chunks)
    pcm = b"".join(chunks)
    assert len(pcm) / 2 / 44100 > 1.0
    heard = server.call(server.services.stt.transcribe(pcm16_to_float(resample_pcm(pcm, 44100, 16000))))
    assert {"quick", "brown", "fox"} <= words(heard.text), heard.text
    body = fake_server.requests[-1]
    assert set(body) <= FIELDS
    assert body["streaming"] is True and body["format"] == "wav" and body["reference_id"] == "narrator"


async def test_resamples_when_server_rate_differs(fake_server):
    service = make_service(fake_server, openaudio_sample_rate=24000)
    pcm = await service.synthesize("Hello there.")
    await service.close()
    seconds = len(pcm) / 2 / 24000
    assert 0.4 < seconds < 3


async def test_sends_reference_audio_as_msgpack(fake_server):
    service = make_service(fake_server)
    clip = (np.zeros(1600, dtype="<i2")).tobytes()
    await service.synthesize("Hi.", references=[ReferenceAudio(audio=clip, text="reference words")])
    await service.close()
    sent = fake_server.requests[-1]["references"][0]
    assert sent == {"audio": clip, "text": "reference words"}


async def test_retries_server_errors_with_backoff(fake_server):
    service = make_service(fake_server, openaudio_retries=2)
    fake_server.fail_next = 2
    before = len(fake_server.requests)
    pcm = await service.synthesize("Third time lucky.")
    await service.close()
    assert len(pcm) > 0
    assert len(fake_server.requests) - before == 3


async def test_gives_up_after_retries(fake_server):
    service = make_service(fake_server, openaudio_retries=1)
    fake_server.fail_next = 5
    with pytest.raises(UpstreamError, match="503"):
        await service.synthesize("Never.")
    fake_server.fail_next = 0
    await service.close()


async def test_wrong_key_is_a_clear_upstream_error(fake_server):
    settings = Settings(app_env="test", openaudio_url=fake_server.url, openaudio_api_key="wrong")
    service = OpenAudioService(settings)
    with pytest.raises(UpstreamError, match="401"):
        await service.synthesize("Hi.")
    await service.close()


async def test_unreachable_server_fails_to_load():
    settings = Settings(app_env="test", openaudio_url=f"http://127.0.0.1:{free_port()}")
    service = OpenAudioService(settings)
    service.health_wait = wait_none()  # the tries, without their backoff
    await service.start()
    assert service.state == "failed" and "not reachable" in service.error
    await service.close()


async def test_embedded_voice_variation_follows_settings(server):
    steady = server.services.tts  # the test server speaks with LOCAL_TTS_VARIATION=0
    assert await steady.synthesize("Same words.") == await steady.synthesize("Same words.")
    natural = LocalTTSService(Settings(app_env="test", _env_file=None))
    await natural.start()
    try:
        await natural.wait_ready(60)
        assert await natural.synthesize("Same words.") != await natural.synthesize("Same words.")
    finally:
        await natural.close()


async def test_embedded_voice_starts_speaking_at_once(server):
    """Piper opens each utterance with 20-60 ms of silence; the first audio a listener gets is the voice."""
    pcm = await server.services.tts.synthesize("The capital of France is Paris.")
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    first_loud = int(np.flatnonzero(samples > 328)[0])
    assert first_loud <= server.services.tts.sample_rate * 0.012
    untrimmed = b"".join([chunk.audio_int16_bytes for chunk in server.services.tts.voice.synthesize(
        "The capital of France is Paris.", server.services.tts._synthesis)])
    assert len(untrimmed) - len(pcm) >= server.services.tts.sample_rate * 2 * 0.01  # the silence was there


def test_the_resampler_keeps_samples_whole_across_chunks():
    """Network chunks split 16-bit samples anywhere: split at odd bytes, the audio comes out as if sent whole."""
    from app.audio.codec import Resampler

    pcm = (np.sin(np.arange(4410) / 7.0) * 8000).astype("<i2").tobytes()
    cuts = [0, 1, 2, 333, 1001, 4096, len(pcm)]
    for src, dst in ((22050, 22050), (22050, 24000)):
        whole, split = Resampler(src, dst), Resampler(src, dst)
        expected = whole.push(pcm) + whole.flush()
        got = b"".join(split.push(pcm[a:b]) for a, b in zip(cuts, cuts[1:])) + split.flush()
        assert len(got) == len(expected), (src, dst)
        # soxr rounds a little differently by chunk; a lost or shifted byte would garble every sample after it
        difference = np.abs(np.frombuffer(got, "<i2").astype(int) - np.frombuffer(expected, "<i2").astype(int))
        assert difference.max() <= (0 if src == dst else 4), (src, dst, difference.max())
