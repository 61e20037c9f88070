"""OpenAudioService: an httpx client of an OpenAudio / fish-speech server (``POST /v1/tts``).

Requests are msgpack (so reference audio bytes can travel), ask for streamed WAV (the only format the
server streams), and the WAV body is turned into PCM as it arrives. Connection failures and 5xx before
the first audio byte are retried with backoff (tenacity); once audio has flowed a failure is reported
instead, since replaying would repeat speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx
import msgpack
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from app.audio.codec import AudioError, Resampler, parse_wav_header
from app.config.settings import Settings
from app.services.base import ServiceUnavailable, UpstreamError
from app.services.tts import TTSEngine


class ServerAnswered(UpstreamError):
    """The server answered the request with an error status."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(f"OpenAudio server answered {status_code}: {detail}")
        self.status_code = status_code


def _worth_retrying(exc: BaseException) -> bool:
    """Connection failures and the server's own errors (5xx, e.g. while it warms up); not its refusals."""
    return isinstance(exc, httpx.HTTPError) or (isinstance(exc, ServerAnswered) and exc.status_code >= 500)


@dataclass
class ReferenceAudio:
    """A voice to clone: a short clip and the words spoken in it."""

    audio: bytes
    text: str


class OpenAudioService(TTSEngine):
    engine = "openaudio"
    # Backoff between tries: of the health check while loading (1, 2, 4, 8 s), and of a request (0.5, 1, 2... s).
    health_wait = wait_exponential(multiplier=1, max=8)
    request_wait = wait_exponential(multiplier=0.5, max=8)
    health_attempts = 5

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(settings)
        if not settings.openaudio_url:
            raise ValueError("OpenAudioService needs OPENAUDIO_URL")
        self.base_url = settings.openaudio_url.rstrip("/")
        self.sample_rate = settings.openaudio_sample_rate
        headers = {}
        if settings.openaudio_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openaudio_api_key.get_secret_value()}"
        self.client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(settings.openaudio_timeout, connect=5.0),
        )

    async def _load(self) -> None:
        # The server holds the model; "loading" here means it answers its health check.
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.health_attempts), wait=self.health_wait,
                                               retry=retry_if_exception(_worth_retrying), reraise=True):
                with attempt:
                    response = await self.client.get("/v1/health", timeout=5.0)
                    if response.status_code >= 500:
                        raise ServerAnswered(response.status_code, "health check failed")
        except (httpx.HTTPError, ServerAnswered) as exc:
            raise ServiceUnavailable(f"OpenAudio server at {self.base_url} is not reachable: {exc}") from exc

    @property
    def model_name(self) -> str:
        reference = self.settings.openaudio_reference_id
        return f"openaudio/{reference}" if reference else "openaudio"

    def status(self) -> dict[str, Any]:
        return {**super().status(), "url": self.base_url, "reference_id": self.settings.openaudio_reference_id}

    def request_body(self, text: str, *, voice: str | None = None,
                     references: list[ReferenceAudio] | None = None) -> dict[str, Any]:
        """A body within the fish-speech schema (no fields it doesn't define)."""
        return {
            "text": text,
            "chunk_length": self.settings.openaudio_chunk_length,
            "format": "wav",
            "streaming": True,
            "references": [{"audio": r.audio, "text": r.text} for r in references or []],
            "reference_id": voice or self.settings.openaudio_reference_id,
            "normalize": True,
            "use_memory_cache": "on",
            "max_new_tokens": 1024,
            "top_p": 0.8,
            "repetition_penalty": 1.1,
            "temperature": 0.8,
        }

    async def stream(self, text: str, *, voice: str | None = None,
                     references: list[ReferenceAudio] | None = None) -> AsyncIterator[bytes]:
        text = self.check_text(text)
        body = msgpack.packb(self.request_body(text, voice=voice, references=references))
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.settings.openaudio_retries + 1),
                                               wait=self.request_wait, retry=retry_if_exception(_worth_retrying),
                                               reraise=True):
                with attempt:
                    response, pcm, first = await self._first_audio(body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"OpenAudio server at {self.base_url} failed: {exc}") from exc
        try:
            if first is not None:
                yield first
            async for chunk in pcm:
                yield chunk
        except httpx.HTTPError as exc:  # audio has flowed: no retry, it would repeat speech
            raise UpstreamError(f"OpenAudio server at {self.base_url} failed: {exc}") from exc
        finally:
            await pcm.aclose()
            await response.aclose()

    async def _first_audio(self, body: bytes) -> tuple[httpx.Response, AsyncIterator[bytes], bytes | None]:
        """Send the request and read up to its first PCM: the response, its PCM, and that first piece."""
        request = self.client.build_request("POST", "/v1/tts", content=body,
                                            headers={"Content-Type": "application/msgpack"})
        response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                detail = (await response.aread())[:300].decode("utf-8", "replace")
                raise ServerAnswered(response.status_code, detail)
            pcm = self._wav_to_pcm(response.aiter_bytes())
            return response, pcm, await anext(pcm, None)
        except BaseException:
            await response.aclose()
            raise

    async def _wav_to_pcm(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        head = b""
        resampler: Resampler | None = None
        async for piece in body:
            if resampler is None:
                head += piece
                try:
                    info = parse_wav_header(head)
                except AudioError as exc:
                    raise UpstreamError(f"OpenAudio server sent something other than WAV: {exc}") from exc
                if info is None:
                    continue
                if info.bits != 16 or info.channels != 1:
                    raise UpstreamError(f"OpenAudio server sent {info.bits}-bit {info.channels}-channel WAV; "
                                        "expected 16-bit mono")
                resampler = Resampler(info.sample_rate, self.sample_rate)
                piece = head[info.header_len:]
            out = resampler.push(piece)  # (it keeps samples whole across network chunks)
            if out:
                yield out
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                yield tail

    async def close(self) -> None:
        await self.client.aclose()
