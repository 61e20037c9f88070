"""Settings validation and where model files come from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from helpers import QUESTION_WORDS, words

from app.audio.codec import decode_audio
from app.config.settings import Settings
from app.malloc_arena import use_one_malloc_arena
from app.models import (WHISPER_BASE_BYTES, ModelUnavailable, embedded_smollm2, embedded_whisper_base, resolve_llm,
                        resolve_whisper)
from app.services.llm import ChatMessage
from app.services.llm.prompt import gemma_prompt
from app.services.whisper import WhisperService


def test_production_refuses_placeholder_secrets():
    with pytest.raises(ValidationError, match="API_KEY is a placeholder"):
        Settings(app_env="production", api_key="changeme")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(app_env="production", livekit_api_key="prodkey", livekit_api_secret="short")
    ok = Settings(app_env="production", api_key="a-real-key-1234", livekit_api_key="prodkey",
                  livekit_api_secret="s" * 40)
    assert ok.livekit_configured is False  # no URL yet


def test_development_allows_dev_secrets():
    settings = Settings(app_env="development", livekit_url="ws://localhost:7880", livekit_api_key="devkey",
                        livekit_api_secret="secret")
    assert settings.livekit_configured


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("LLM_N_CTX", "2048")
    monkeypatch.setenv("CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("OPENAUDIO_URL", "")
    settings = Settings()
    assert settings.llm_n_ctx == 2048
    assert settings.cors_origin_list == ["http://a.example", "http://b.example"]
    assert settings.openaudio_url is None


def test_llm_sources_in_order(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_llm(Settings(app_env="test", llm_model_path=gguf)).path == gguf
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_llm(Settings(app_env="test", llm_model_path=tmp_path / "missing.gguf"))
    with pytest.raises(ModelUnavailable, match="LLM_HF_FILE"):
        resolve_llm(Settings(app_env="test", llm_hf_repo="google/gemma-3-1b-it-qat-q4_0-gguf"))
    embedded = resolve_llm(Settings(app_env="test"))
    assert embedded.path.suffix == ".gguf" and embedded.path.stat().st_size > 50_000_000


def test_embedded_smollm2_is_rewritten_as_q8_0_once(tmp_path):
    from llama_cpp import Llama

    gguf = embedded_smollm2(tmp_path)
    stamp = gguf.stat().st_mtime_ns
    assert embedded_smollm2(tmp_path) == gguf and gguf.stat().st_mtime_ns == stamp  # second call skips the work
    assert list(tmp_path.iterdir()) == [gguf]  # no partial file left behind
    model = Llama(model_path=str(gguf), n_ctx=64, verbose=False, vocab_only=True)
    assert model.metadata["general.file_type"] == "7"  # LLAMA_FTYPE_MOSTLY_Q8_0


def test_embedded_whisper_is_joined_once(tmp_path):
    folder = embedded_whisper_base(tmp_path)
    model_bin = folder / "model.bin"
    assert model_bin.stat().st_size == WHISPER_BASE_BYTES
    stamp = model_bin.stat().st_mtime_ns
    assert embedded_whisper_base(tmp_path) == folder
    assert model_bin.stat().st_mtime_ns == stamp  # second call skips the work
    assert resolve_whisper(Settings(app_env="test", whisper_model="small.en")) == "small.en"


async def test_embedded_tiny_en_transcribes_english(question_wav):
    service = WhisperService(Settings(app_env="test", whisper_model="embedded-tiny.en"))
    await service.start()
    try:
        await service.wait_ready(60)
        heard = await service.transcribe(decode_audio(question_wav), language="en")
    finally:
        await service.close()
    assert QUESTION_WORDS <= words(heard.text), heard.text


def test_gemma_turn_format_folds_system_into_first_user_turn():
    prompt = gemma_prompt([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"),
                           ChatMessage("assistant", "Hello!"), ChatMessage("user", "Bye")])
    assert prompt == ("<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
                      "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")


def test_one_malloc_arena_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert use_one_malloc_arena()  # glibc's mallopt accepted it
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not use_one_malloc_arena()


def test_model_server_settings_are_checked():
    with pytest.raises(ValueError, match="TTS_ENGINE=remote needs TTS_BASE_URL"):
        Settings(_env_file=None, tts_engine="remote")
    with pytest.raises(ValueError, match="LLM_BASE_URL must be an http"):
        Settings(_env_file=None, llm_base_url="gpu-host:8000/v1")


def test_a_model_servers_address_is_shown_without_its_secrets():
    from app.services.remote import public_url

    assert public_url("https://user:pw@gpu-host:8443/v1?api-key=k") == "https://gpu-host:8443/v1"
    assert public_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
