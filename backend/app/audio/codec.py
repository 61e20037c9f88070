"""Audio decoding, resampling and PCM/WAV framing: the one home for them, used by every adapter.

WAV files are written by the standard library's ``wave``; everything else goes through PyAV (FFmpeg).

PCM here means signed 16-bit little-endian mono unless a name says otherwise.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np

WHISPER_RATE = 16000


class AudioError(ValueError):
    """Bad audio input. ``code`` becomes the JSON error code, ``status`` the HTTP status."""

    def __init__(self, message: str, *, code: str = "invalid_audio", status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


# Magic bytes of the containers we accept, so an unknown upload gets 415 before any decoding.
_SIGNATURES: list[tuple[str, int, bytes]] = [
    ("wav", 0, b"RIFF"),
    ("flac", 0, b"fLaC"),
    ("ogg", 0, b"OggS"),
    ("webm", 0, b"\x1a\x45\xdf\xa3"),
    ("mp3", 0, b"ID3"),
    ("mp4", 4, b"ftyp"),
]


def sniff_format(head: bytes) -> str | None:
    for name, offset, magic in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    # Bare MPEG audio frames start with an 11-bit sync word.
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"
    return None


def decode_audio(data: bytes, *, target_rate: int = WHISPER_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Any accepted container/codec -> float32 mono samples in [-1, 1] at ``target_rate``."""
    import av

    if not data:
        raise AudioError("the audio file is empty", code="empty_audio")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise AudioError(
            "unsupported audio format: send WAV, MP3, OGG/Opus, WebM or FLAC",
            code="unsupported_audio_format", status=415,
        )
    resampler = av.AudioResampler(format="s16", layout="mono", rate=target_rate)
    pieces: list[np.ndarray] = []
    total = 0
    limit = int(max_seconds * target_rate) if max_seconds else None
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioError(f"the {fmt} file has no audio stream")
            for frame in container.decode(audio=0):
                frame.pts = None
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    pieces.append(arr)
                    total += arr.size
                if limit is not None and total > limit:
                    raise AudioError(f"audio is longer than the {max_seconds:.0f} s limit",
                                     code="audio_too_long", status=413)
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise AudioError(f"could not decode the {fmt} audio: {exc}") from exc
    if not pieces:
        raise AudioError(f"the {fmt} file holds no audio samples", code="empty_audio")
    return np.concatenate(pieces).astype(np.float32) / 32768.0


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def trim_leading_silence(pcm: bytes, sample_rate: int, *, keep_ms: float = 10.0, floor: int = 328) -> bytes:
    """PCM s16le from ``keep_ms`` before its first sample louder than ``floor`` (-40 dBFS); all silence stays."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm[:len(pcm) // 2 * 2], dtype="<i2").astype(np.int32)) > floor)
    if loud.size == 0:
        return pcm
    return pcm[2 * max(0, int(loud[0]) - round(sample_rate * keep_ms / 1000)):]


class Resampler:
    """Streaming PCM resampler (libsoxr through livekit.rtc); identity when the rates match. Pieces may split a
    sample anywhere (network chunks): a trailing odd byte waits for the next piece."""

    def __init__(self, src_rate: int, dst_rate: int):
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._carry = b""
        self._inner = None
        if src_rate != dst_rate:
            from livekit import rtc

            self._inner = rtc.AudioResampler(src_rate, dst_rate, num_channels=1,
                                              quality=rtc.AudioResamplerQuality.MEDIUM)

    def push(self, pcm: bytes) -> bytes:
        pcm = self._carry + pcm
        whole = len(pcm) - len(pcm) % 2
        pcm, self._carry = pcm[:whole], pcm[whole:]
        if self._inner is None or not pcm:
            return pcm
        return b"".join(bytes(f.data) for f in self._inner.push(bytearray(pcm)))

    def flush(self) -> bytes:
        if self._inner is None:
            return b""
        return b"".join(bytes(f.data) for f in self._inner.flush())


def resample_pcm(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    r = Resampler(src_rate, dst_rate)
    return r.push(pcm) + r.flush()


# What a WAV header of a stream of unknown length states: the largest size the format can hold.
_STREAM_WAV_FRAMES = (0xFFFFFFFF - 36) // 2


def _wav_writer(buffer: io.BytesIO, sample_rate: int, channels: int) -> wave.Wave_write:
    writer = wave.open(buffer, "wb")
    writer.setnchannels(channels)
    writer.setsampwidth(2)
    writer.setframerate(sample_rate)
    return writer


def wav_header(sample_rate: int, data_bytes: int | None = None, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV; ``data_bytes=None`` starts a stream of unknown length."""
    buffer = io.BytesIO()
    with _wav_writer(buffer, sample_rate, channels) as writer:
        writer.setnframes(_STREAM_WAV_FRAMES // channels if data_bytes is None else data_bytes // (2 * channels))
        writer.writeframesraw(b"")  # writes the header alone
        header = buffer.getvalue()
    return header


def pcm_to_wav(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with _wav_writer(buffer, sample_rate, channels) as writer:
        writer.writeframes(pcm)
    return buffer.getvalue()


def encode_with_av(pcm: bytes, sample_rate: int, container: str, codec: str) -> bytes:
    """PCM -> a compressed container (mp3, ogg/opus, webm, flac...) through PyAV's FFmpeg."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def pcm_to_mp3(pcm: bytes, sample_rate: int) -> bytes:
    return encode_with_av(pcm, sample_rate, "mp3", "libmp3lame")


@dataclass
class WavInfo:
    sample_rate: int
    channels: int
    bits: int
    header_len: int


def parse_wav_header(head: bytes) -> WavInfo | None:
    """Parse a (possibly streamed) WAV header; None until enough bytes have arrived."""
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError("not a WAV stream", code="bad_upstream_audio", status=502)
    pos = 12
    fmt: tuple[int, int, int] | None = None
    while pos + 8 <= len(head):
        cid = head[pos:pos + 4]
        size = struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"data":
            if fmt is None:
                raise AudioError("WAV stream has no fmt chunk", code="bad_upstream_audio", status=502)
            return WavInfo(sample_rate=fmt[1], channels=fmt[0], bits=fmt[2], header_len=pos + 8)
        if cid == b"fmt ":
            if pos + 8 + 16 > len(head):
                return None
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[pos + 8:pos + 24])
            fmt = (channels, rate, bits)
        pos += 8 + size + (size & 1)
    return None


AUDIO_MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "mp3": "audio/mpeg"}


def encode_audio(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    """PCM -> the container a client asked for (one of AUDIO_MEDIA_TYPES)."""
    if fmt == "wav":
        return pcm_to_wav(pcm, sample_rate)
    if fmt == "mp3":
        return pcm_to_mp3(pcm, sample_rate)
    if fmt == "pcm":
        return pcm
    raise AudioError(f"unsupported output format {fmt!r}: use one of {', '.join(AUDIO_MEDIA_TYPES)}",
                     code="unsupported_format")


# G.711 (telephone audio, 8 kHz, one byte a sample) through FFmpeg's pcm_mulaw / pcm_alaw. The codecs keep no
# state between frames, so one encoder and one decoder a law serve every caller (on the event loop).
G711_RATE = 8000
G711_CODECS = {"ulaw": "pcm_mulaw", "alaw": "pcm_alaw"}
_g711: dict[tuple[str, str], object] = {}


def _g711_context(law: str, mode: str):
    import av

    context = _g711.get((law, mode))
    if context is None:
        context = av.CodecContext.create(G711_CODECS[law], mode)
        context.sample_rate, context.layout = G711_RATE, "mono"
        if mode == "w":
            context.format = "s16"
        context.open()
        _g711[(law, mode)] = context
    return context


def g711_encode(pcm: bytes, law: str) -> bytes:
    """PCM s16le at 8 kHz -> G.711 bytes (``law``: ``ulaw`` or ``alaw``)."""
    import av

    samples = np.frombuffer(pcm[:len(pcm) - len(pcm) % 2], dtype="<i2")
    if not samples.size:
        return b""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = G711_RATE
    return b"".join(bytes(packet) for packet in _g711_context(law, "w").encode(frame))


def g711_decode(data: bytes, law: str) -> bytes:
    """G.711 bytes -> PCM s16le at 8 kHz."""
    import av

    if not data:
        return b""
    frames = _g711_context(law, "r").decode(av.Packet(data))
    return b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)
