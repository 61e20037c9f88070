"""G.711 (mu-law and A-law, 8 kHz telephone audio) to and from PCM s16le, with numpy lookup tables.

``audioop`` did this until Python 3.13 removed it.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
_BIAS = 0x84


def _bit_length(values: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(np.maximum(values, 1))).astype(np.int32) + 1


def _ulaw_table() -> tuple[np.ndarray, np.ndarray]:
    linear = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as G.711 (and audioop) count
    mask = np.where(linear < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(linear < 0, -linear, linear), 8159) + 0x21
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), magnitude)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    encode = (code ^ mask).astype(np.uint8)
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exp, man = (codes >> 4) & 0x07, codes & 0x0F
    value = (((man << 3) + _BIAS) << exp) - _BIAS
    decode = np.where(codes & 0x80, -value, value).astype(np.int16)
    return encode, decode


def _alaw_table() -> tuple[np.ndarray, np.ndarray]:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(linear >= 0, 0x80, 0)
    magnitude = np.where(linear >= 0, linear, -linear - 1) >> 3  # 13-bit magnitude
    exponent = np.clip(_bit_length(magnitude) - 5, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    encode = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exp, man = (codes >> 4) & 0x07, codes & 0x0F
    value = np.where(exp == 0, (man << 4) + 8, ((man << 4) + 0x108) << np.maximum(exp - 1, 0))
    decode = np.where(codes & 0x80, value, -value).astype(np.int16)
    return encode, decode


_TABLES = {"ulaw": _ulaw_table(), "alaw": _alaw_table()}


def encode(pcm: bytes, law: str) -> bytes:
    """PCM s16le -> one G.711 byte a sample (``law``: ``ulaw`` or ``alaw``)."""
    samples = np.frombuffer(pcm[:len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.int32)
    return _TABLES[law][0][samples + 32768].tobytes()


def decode(data: bytes, law: str) -> bytes:
    """G.711 bytes -> PCM s16le."""
    return _TABLES[law][1][np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
