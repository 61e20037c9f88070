"""Prometheus metrics: the one registry every adapter records into."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter("gemmavoice_http_requests_total", "HTTP requests", ["method", "route", "status"],
                        registry=REGISTRY)
HTTP_LATENCY = Histogram("gemmavoice_http_request_seconds", "HTTP request time", ["method", "route"],
                         registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
LLM_TOKENS = Counter("gemmavoice_llm_tokens_total", "Tokens generated", registry=REGISTRY)
LLM_FIRST_TOKEN = Histogram("gemmavoice_llm_first_token_seconds", "Time to first token", registry=REGISTRY,
                            buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
STT_SECONDS = Histogram("gemmavoice_stt_seconds", "Transcription time", registry=REGISTRY,
                        buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10))
TTS_FIRST_AUDIO = Histogram("gemmavoice_tts_first_audio_seconds", "Time to first audio", registry=REGISTRY,
                            buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
VOICE_SESSIONS = Gauge("gemmavoice_voice_sessions", "Open WebSocket voice sessions", registry=REGISTRY)
VOICE_TO_VOICE = Histogram("gemmavoice_voice_to_voice_seconds", "End of user speech to first reply audio",
                           registry=REGISTRY, buckets=(0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5))
MODEL_READY = Gauge("gemmavoice_model_ready", "1 when a component is ready", ["component"], registry=REGISTRY)
