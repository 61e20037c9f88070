"""The one settings class. Read once (``get_settings()``) and passed in: the app's own code reads its
configuration from nowhere else.

The environment has other readers, which these settings do not replace: ``MALLOC_ARENA_MAX``
(``app.malloc_arena``, before anything allocates), libraries that read their own variables (``HF_TOKEN``:
huggingface_hub; ``FORWARDED_ALLOW_IPS``: uvicorn), and LiveKit Agents, which the worker tells through the
environment not to preload a model it does not use (``app.agents.worker``).

Every variable is documented in ``.env.example`` at the repository root.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKEND_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = BACKEND_DIR.parent

# Values that ship in .env.example: refused as secrets outside development.
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "devkey", "devsecret", "your-api-key", "your-api-secret"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(REPO_DIR / ".env", BACKEND_DIR / ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # --- server -------------------------------------------------------------------------------
    app_env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    api_key: Optional[SecretStr] = None
    cors_origins: str = "http://localhost:5173,http://127.0.0.1:5173"
    web_dist_dir: Path = REPO_DIR / "frontend" / "dist"
    models_dir: Path = BACKEND_DIR / ".models"

    # --- limits -------------------------------------------------------------------------------
    max_upload_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 300.0
    max_text_chars: int = 4000
    max_prompt_chars: int = 16000
    max_tokens_cap: int = 1024
    ready_wait_seconds: float = 5.0

    # --- security (README "Security") ---------------------------------------------------------
    # Operator key for /v1/livekit/agent-token (never the user API_KEY). Unset: agent tokens are refused.
    admin_api_key: Optional[SecretStr] = None
    # Per-client rate limits (client = remote address), in `limits` notation: "30/minute", "5/second;100/hour".
    # Empty = no limit for that group. Over the limit: 429 with Retry-After.
    rate_limit_enabled: bool = True
    rate_limit_tokens: str = "30/minute"           # POST /v1/livekit/token, /v1/livekit/agent-token
    rate_limit_generation: str = "120/minute"      # /v1/generate, /v1/generate_stream, /v1/chat/completions
    rate_limit_transcription: str = "60/minute"    # /v1/speech-to-text, /v1/audio/transcriptions, /dialogue
    rate_limit_speech: str = "120/minute"          # /v1/text-to-speech, /v1/audio/speech
    rate_limit_voice_sessions: str = "30/minute"   # new WS /v1/conversation/ws and /v1/realtime sessions

    # --- LLM ----------------------------------------------------------------------------------
    llm_model_path: Optional[Path] = None
    llm_hf_repo: Optional[str] = None
    llm_hf_file: Optional[str] = None
    llm_n_ctx: int = 4096
    llm_n_threads: int = 2
    llm_instances: int = Field(1, ge=1, le=16)
    llm_queue_size: int = Field(16, ge=0)
    # A generation yields the model to a waiting request after this many tokens (0 = first come, first finished).
    llm_slice_tokens: int = Field(32, ge=0)
    # KV states of recent replies, so each conversation's next turn skips re-reading its history (0 = off).
    llm_state_cache_mb: int = Field(256, ge=0)
    llm_default_max_tokens: int = 256
    llm_request_timeout: float = 120.0

    # A model server of your own (OpenAI-compatible: vLLM, llama.cpp's llama-server, Ollama's /v1, another
    # GemmaVoice API). Set, every chat completion streams from LLM_BASE_URL and no GGUF is loaded; the LLM_*
    # settings above are then unused but LLM_N_CTX (the server's context) and LLM_REQUEST_TIMEOUT (a whole reply).
    # LLM_MODEL is the model name that server knows (empty: the first it lists).
    llm_base_url: Optional[str] = None
    llm_api_key: Optional[SecretStr] = None
    llm_model: Optional[str] = None
    # The first streamed token may take this long (the server may queue us behind others) before the turn
    # fails with an error naming the server (not retried: another try would queue behind this one).
    llm_first_token_timeout_s: float = Field(20.0, gt=0.0)

    # --- STT ----------------------------------------------------------------------------------
    whisper_model: str = "embedded-base"
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    whisper_threads: int = 2
    whisper_beam_size: int = 1
    # The encoder sees max(this, clip + 1 s) of audio instead of Whisper's fixed 30 s window; 30 = stock.
    whisper_min_window_s: float = Field(7.5, ge=1.0, le=30.0)
    # A segment Whisper thinks holds no speech and decodes unsurely is dropped: on a cough it writes "I'm
    # sorry." or "BAM!" (no-speech 0.33-0.60), where short spoken words scored 0.18 at most
    # (bench.noise_words, docs/benchmarks.md).
    whisper_no_speech_threshold: float = Field(0.3, ge=0.0, le=1.0)
    whisper_log_prob_threshold: float = Field(-0.7, le=0.0)

    # An OpenAI-compatible transcription server (`POST {STT_BASE_URL}/audio/transcriptions`: speaches, another
    # GemmaVoice API). Set, Whisper is not loaded here.
    stt_base_url: Optional[str] = None
    stt_api_key: Optional[SecretStr] = None
    stt_model: str = "whisper-1"

    # --- TTS ----------------------------------------------------------------------------------
    tts_engine: Literal["auto", "openaudio", "remote", "local"] = "auto"
    tts_default_voice: Optional[str] = None
    # Scales the embedded piper voice's sampling noise: 1 = the voice's own, 0 = the same audio for the same text.
    local_tts_variation: float = Field(1.0, ge=0.0, le=2.0)
    openaudio_url: Optional[str] = None
    openaudio_api_key: Optional[SecretStr] = None
    openaudio_reference_id: Optional[str] = None
    openaudio_timeout: float = 60.0
    openaudio_retries: int = 2
    openaudio_chunk_length: int = 200
    openaudio_sample_rate: int = 44100

    # An OpenAI-compatible speech server (`POST {TTS_BASE_URL}/audio/speech`: speaches, another GemmaVoice API,
    # a GPU host). Set (and TTS_ENGINE auto), it speaks instead of the embedded voice; OPENAUDIO_URL wins over it.
    tts_base_url: Optional[str] = None
    tts_api_key: Optional[SecretStr] = None
    tts_model: str = "tts-1"
    tts_voice: Optional[str] = None

    # --- model servers (LLM_BASE_URL, STT_BASE_URL, TTS_BASE_URL) -----------------------------------------
    # Connecting to a model server gives up after this long; a request that failed before any output is tried
    # again up to REMOTE_RETRIES times, 0.25 s, 0.5 s, 1 s... apart. A server that stops answering is checked
    # again every REMOTE_PROBE_INTERVAL_S seconds until it does (meanwhile health says why, and a worker takes
    # no room).
    remote_connect_timeout_s: float = Field(3.0, gt=0.0)
    remote_read_timeout_s: float = Field(30.0, gt=0.0)
    remote_retries: int = Field(2, ge=0, le=10)
    remote_probe_interval_s: float = Field(2.0, gt=0.0)

    # --- voice conversation -------------------------------------------------------------------
    # Worded for the small embedded model too: it answered questions about France in French when told it was
    # "Gemma", and rambled more at temperature 0.7 (docs/benchmarks.md, issue #3).
    voice_instructions: str = (
        "You are a helpful voice assistant. Answer briefly, in one or two short sentences, "
        "with no lists, markdown or emoji."
    )
    voice_temperature: float = Field(0.3, ge=0.0, le=2.0)
    # A small model loops ("I'm not sure. I'm not sure.", "a classic comfort food with a twist: a classic
    # comfort food with a twist"); llama.cpp's repeat penalty over the last 64 tokens stops that. 1.0 is off.
    # Greedy over 21 benchmark questions, the embedded model repeats a 4-word phrase in 6 replies at 1.0, in 1
    # at 1.1, in none at 1.2 (docs/benchmarks.md).
    voice_repeat_penalty: float = Field(1.2, ge=1.0, le=2.0)
    voice_max_reply_tokens: int = 120
    # How much of the conversation a voice turn's model reads (instructions, recent turns, the reply). Each
    # token of context slows every later token: the embedded model (as Q4_1) wrote one in 11.5 ms at 1000 tokens
    # of context and 20 ms at 3000, and reads a new turn 60-80 ms slower (docs/benchmarks.md). Capped by LLM_N_CTX.
    voice_context_tokens: int = Field(1536, ge=256)
    # Speech during a reply pauses it after this long, counted from the VAD's start of speech (which already
    # needs VAD_MIN_SPEECH_MS); it stops for good once two early Whisper passes agree on a first word, and goes
    # on if none were heard (a cough, a door) within voice_false_interruption_s of the noise ending. 50 pauses
    # at the first VAD window after the start: the client's audio pauses ~80 ms after the user starts talking
    # (200: ~240 ms), with no more pauses on the noises of bench.voice_bench (a sound the VAD takes for speech
    # paused the reply at 200 too: the VAD counts its trailing silence as speech until it ends).
    voice_min_interruption_ms: int = Field(50, ge=50, le=2000)
    voice_false_interruption_s: float = Field(1.5, ge=0.2, le=10.0)
    # The first seconds of the agent's speech in a session, while the listener's echo canceller still learns its
    # voice: speech over the agent then is checked for its echo (app.agents.voice_agent.EchoCheck: a voice that
    # stops when the reply pauses, or words the agent said, neither stop the reply nor make a turn); the user's
    # own words stop it as at any time. 0: no check (a headset, a phone line).
    voice_aec_warmup_s: float = Field(3.0, ge=0.0, le=10.0)
    # A spoken turn Whisper decoded less surely than this (mean token log-probability) is taken for a noise:
    # backwards speech and hisses came out as "Steech desa" at -1.17 to -1.56, 36 short spoken words at
    # -1.06 or better (bench.noise_words). Uploaded files (REST) keep every segment.
    voice_min_log_prob: float = Field(-1.1, le=0.0)
    # Whisper starts on an utterance once the VAD has scored this much audio below its speech threshold, while
    # it still waits VAD_MIN_SILENCE_MS to be sure the turn ended; if the user goes on, that guess is dropped.
    # 32 ms (the first such VAD window) starts Whisper 112 ms after the end of the voice at p50, the VAD's own
    # silence count ~200 ms after it, with no more word errors and no more dropped guesses (docs/benchmarks.md).
    voice_speculate_after_ms: int = Field(32, ge=32, le=1000)
    # A turn that never ends (a noisy room) is cut here and answered.
    voice_max_turn_seconds: float = Field(30.0, ge=2.0, le=300.0)
    # A file the LiveKit agent appends each turn's moments to (app.agents.turn_trace; bench.room_latency's hop
    # table). Unset: no trace.
    voice_turn_trace: Optional[Path] = None
    vad_min_silence_ms: int = 250
    # Voiced audio before the VAD says speech started (silero scores 32 ms windows): 32 starts at the first window
    # over the threshold (after its smoothing), ~64 ms after the voice. 80 (three windows) paused a reply 32-64 ms
    # later, with the same pauses on coughs, knocks and backwards speech (bench.voice_bench).
    vad_min_speech_ms: int = Field(32, ge=0)
    vad_activation_threshold: float = 0.5
    max_voice_sessions: int = 32

    # --- LiveKit ------------------------------------------------------------------------------
    livekit_url: Optional[str] = None
    livekit_public_url: Optional[str] = None
    livekit_api_key: Optional[str] = None
    livekit_api_secret: Optional[SecretStr] = None
    livekit_room_name: str = "gemma-voice-room"
    # Token lifetime in seconds (a token is only needed to join; the session outlives it). Was 86400 before issue 10.
    livekit_token_ttl: int = 900
    livekit_token_max_ttl: int = 3600  # the most a client may ask for with `ttl`
    livekit_agent_name: str = "gemma-voice-agent"
    # The agent worker's load is its share of busy job slots (memory permitting), scaled so that "all
    # slots busy" reads as this threshold: keep it at or below the LiveKit server's agents target_load (0.7).
    livekit_worker_load_threshold: float = Field(0.7, gt=0.0, le=1.0)
    livekit_worker_max_jobs: int = Field(2, ge=1, le=64)  # conversations one worker runs at once
    # Free memory one more conversation needs; below it the worker reports itself full (docs/benchmarks.md).
    livekit_job_memory_mb: int = Field(200, ge=0)
    # The standalone worker's health port (0 = any free port); taken by another worker, a free one is used.
    livekit_worker_port: int = Field(8081, ge=0, le=65535)
    # The API process also runs the agent worker, sharing its models (always on with the local server below).
    livekit_in_process_agent: bool = False
    # Development only: with no LIVEKIT_URL and a livekit-server binary (PATH or LIVEKIT_SERVER_BIN),
    # the API starts one on loopback with generated keys, plus the in-process agent.
    livekit_local_server: bool = True
    livekit_server_bin: Optional[Path] = None
    # The room keeper (app.services.room_keeper): the API watches LiveKit rooms and sends an agent into any room
    # with a user and none (a worker died, no worker had room when it started). Off only if something else does.
    livekit_keeper: bool = True
    # Where the local server (make run) posts its webhooks; default: this API on loopback (HOST-independent).
    livekit_webhook_url: Optional[str] = None
    # The key name LiveKit signs webhooks with (its `webhook.api_key`), with LIVEKIT_API_SECRET; default
    # LIVEKIT_API_KEY. Compose uses a pair of its own, so that livekit.yaml names no key of the user's.
    livekit_webhook_api_key: Optional[str] = None

    # --- rooms' conversations (app.services.room_store) ----------------------------------------------------
    # Redis shared by every API replica and worker (redis://:password@host:6379/0); unset: an SQLite file that
    # the processes of one machine share.
    redis_url: Optional[SecretStr] = None
    room_store_path: Path = BACKEND_DIR / ".data" / "rooms.sqlite"
    room_history_max_items: int = Field(200, ge=2)  # messages kept per room (the model reads fewer)
    room_history_ttl_s: int = Field(86400, ge=60)  # a room whose end was never heard of: forgotten after this

    @field_validator("api_key", "admin_api_key", "openaudio_api_key", "livekit_api_secret", "llm_api_key",
                     "stt_api_key", "tts_api_key", "redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if value in ("", None) else value

    @field_validator("llm_model_path", "llm_hf_repo", "llm_hf_file", "openaudio_url", "livekit_url", "llm_base_url",
                     "llm_model", "stt_base_url", "tts_base_url", "tts_voice",
                     "livekit_public_url", "livekit_api_key", "livekit_server_bin", "livekit_webhook_url", "livekit_webhook_api_key",
                     "voice_turn_trace", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> "Settings":
        if self.app_env != "production":
            return self
        problems = []
        if self.api_key is not None and self.api_key.get_secret_value().lower() in _PLACEHOLDERS:
            problems.append("API_KEY is a placeholder")
        if self.livekit_api_secret is not None:
            secret = self.livekit_api_secret.get_secret_value()
            if secret.lower() in _PLACEHOLDERS or len(secret) < 32:
                problems.append("LIVEKIT_API_SECRET must be a real secret of at least 32 characters")
        if self.livekit_api_key is not None and self.livekit_api_key.lower() in _PLACEHOLDERS:
            problems.append("LIVEKIT_API_KEY is a placeholder")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @field_validator("rate_limit_tokens", "rate_limit_generation", "rate_limit_transcription", "rate_limit_speech",
                     "rate_limit_voice_sessions")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        from limits import parse_many

        if value.strip():
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit ({value!r}): use e.g. '30/minute' or '5/second;100/hour'") from exc
        return value.strip()

    @model_validator(mode="after")
    def _check_model_servers(self) -> "Settings":
        if self.tts_engine == "remote" and not self.tts_base_url:
            raise ValueError("TTS_ENGINE=remote needs TTS_BASE_URL (an OpenAI-compatible speech server's /v1)")
        for name in ("llm_base_url", "stt_base_url", "tts_base_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name.upper()} must be an http:// or https:// URL (e.g. http://host:8000/v1)")
        return self

    @model_validator(mode="after")
    def _check_security_settings(self) -> "Settings":
        if not 60 <= self.livekit_token_ttl <= self.livekit_token_max_ttl:
            raise ValueError("LIVEKIT_TOKEN_TTL must be at least 60 and at most LIVEKIT_TOKEN_MAX_TTL "
                             f"({self.livekit_token_max_ttl}) seconds")
        if self.admin_api_key is not None:
            admin = self.admin_api_key.get_secret_value()
            if self.api_key is not None and admin == self.api_key.get_secret_value():
                raise ValueError("ADMIN_API_KEY must differ from API_KEY: it grants what the user key must not")
            if self.app_env == "production" and (admin.lower() in _PLACEHOLDERS or len(admin) < 16):
                raise ValueError("refusing to start in production: ADMIN_API_KEY must be a real secret of at least "
                                 "16 characters")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def livekit_webhook_target(self) -> str:
        """Where a local livekit-server sends its webhooks."""
        return self.livekit_webhook_url or f"http://127.0.0.1:{self.port}/v1/livekit/webhook"

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def livekit_browser_url(self) -> Optional[str]:
        return self.livekit_public_url or self.livekit_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
