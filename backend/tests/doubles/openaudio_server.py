"""FakeOpenAudioServer: a TEST DOUBLE of the OpenAudio / fish-speech HTTP API (``POST /v1/tts``).

It stands in for a real fish-speech server, which needs model weights and a GPU that this machine
doesn't have. It speaks the same contract (JSON or msgpack bodies with the fish-speech fields,
streamed WAV, optional Bearer key, ``GET /v1/health``) and returns real speech made by piper, so
what the client decodes can be transcribed back. It records the requests it got, and can be told to
fail the next N requests with 503 to exercise retries.
"""

from __future__ import annotations

import asyncio
import threading
import time

import msgpack
import uvicorn
from piper import SynthesisConfig
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.audio.codec import pcm_to_wav, resample_pcm, wav_header

# The fields of fish-speech's ServeTTSRequest; anything else is refused, as pydantic there would.
FIELDS = {"text", "chunk_length", "format", "references", "reference_id", "seed", "use_memory_cache",
          "normalize", "streaming", "max_new_tokens", "top_p", "repetition_penalty", "temperature"}


class FakeOpenAudioServer:
    def __init__(self, voice, *, api_key: str | None = None, sample_rate: int = 44100):
        self.voice = voice  # a loaded piper.PiperVoice
        self.api_key = api_key
        self.sample_rate = sample_rate
        self.requests: list[dict] = []
        self.fail_next = 0
        self.app = self._build()
        self.url = ""
        self._server: uvicorn.Server | None = None

    def _speak(self, text: str) -> list[bytes]:
        rate = self.voice.config.sample_rate
        steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # the same audio for the same text
        return [resample_pcm(chunk.audio_int16_bytes, rate, self.sample_rate)
                for chunk in self.voice.synthesize(text, steady)]

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/health")
        async def health():
            return {"status": "ok"}

        @app.post("/v1/tts")
        async def tts(request: Request):
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"detail": "unauthorized"}, status_code=401)
            raw = await request.body()
            if request.headers.get("content-type") == "application/msgpack":
                body = msgpack.unpackb(raw)
            else:
                import json
                body = json.loads(raw)
            self.requests.append(body)
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"detail": "warming up"}, status_code=503)
            unknown = set(body) - FIELDS
            if unknown or not body.get("text"):
                return JSONResponse({"detail": f"invalid request: {sorted(unknown) or 'empty text'}"}, status_code=422)
            if not 0.1 <= body.get("top_p", 0.8) <= 1.0 or not 0.1 <= body.get("temperature", 0.8) <= 1.0:
                return JSONResponse({"detail": "top_p/temperature out of range"}, status_code=422)
            pieces = await asyncio.to_thread(self._speak, body["text"])
            if body.get("streaming"):
                if body.get("format") != "wav":
                    return JSONResponse({"detail": "streaming only supports wav"}, status_code=400)

                async def stream():
                    yield wav_header(self.sample_rate)
                    for piece in pieces:
                        for i in range(0, len(piece), 4001):  # odd sizes: samples split across chunks
                            yield piece[i:i + 4001]
                            await asyncio.sleep(0)
                return StreamingResponse(stream(), media_type="audio/wav")
            return Response(pcm_to_wav(b"".join(pieces), self.sample_rate), media_type="audio/wav")

        return app

    def start(self, port: int) -> "FakeOpenAudioServer":
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=self._server.run, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAudio server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
