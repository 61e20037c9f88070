import { describe, expect, it } from 'vitest';
import { PcmChunker } from '../../src/audio/capture.worklet.js';

/** 128-frame render quanta of a sine, as an AudioWorklet receives them. */
function* quanta(rate: number, seconds: number, frequency: number, amplitude = 0.5, channels = 1) {
  const total = Math.round(rate * seconds);
  for (let offset = 0; offset < total; offset += 128) {
    const block = new Float32Array(Math.min(128, total - offset));
    for (let i = 0; i < block.length; i++) {
      block[i] = amplitude * Math.sin((2 * Math.PI * frequency * (offset + i)) / rate);
    }
    yield Array.from({ length: channels }, () => block);
  }
}

function run(chunker: PcmChunker, blocks: Iterable<Float32Array[]>) {
  return Array.from(blocks).flatMap((block) => chunker.push(block));
}

describe('PcmChunker (capture worklet core)', () => {
  it('downsamples 48 kHz to 16 kHz in 20 ms chunks of Int16', () => {
    const chunks = run(new PcmChunker(48000, 16000, 320), quanta(48000, 1, 440));
    expect(chunks).toHaveLength(50);
    expect(chunks.every((c) => c.pcm instanceof Int16Array && c.pcm.length === 320)).toBe(true);
    // A 440 Hz sine of amplitude 0.5 keeps its level (RMS 0.354) through the box filter.
    expect(chunks[10].level).toBeGreaterThan(0.33);
    expect(chunks[10].level).toBeLessThan(0.36);
    const peak = Math.max(...chunks[10].pcm);
    expect(peak).toBeGreaterThan(0.47 * 0x7fff);
  });

  it('handles a non-integer ratio (44.1 kHz) at the right output rate', () => {
    const chunks = run(new PcmChunker(44100, 16000, 320), quanta(44100, 2, 200));
    // 2 s at 16 kHz = 32000 samples = 100 chunks (the last one may still be filling).
    expect(chunks.length).toBeGreaterThanOrEqual(99);
    expect(chunks.length).toBeLessThanOrEqual(100);
  });

  it('downmixes channels and upsamples a slower input', () => {
    const stereo = run(new PcmChunker(16000, 16000, 160), quanta(16000, 0.1, 300, 0.5, 2));
    expect(stereo).toHaveLength(10);
    const up = run(new PcmChunker(8000, 16000, 160), quanta(8000, 0.105, 300));
    expect(up).toHaveLength(10);
  });

  it('filters out what would alias into the speech band', () => {
    // 12 kHz is above the 8 kHz Nyquist of 16 kHz output: unfiltered, it would fold to 4 kHz.
    const chunks = run(new PcmChunker(48000, 16000, 320), quanta(48000, 0.5, 12000));
    expect(Math.max(...chunks.slice(2).map((c) => c.level))).toBeLessThan(0.01);
    // While 3 kHz speech content passes untouched.
    const speech = run(new PcmChunker(48000, 16000, 320), quanta(48000, 0.5, 3000));
    expect(speech[5].level).toBeGreaterThan(0.34);
  });

  it('clips to the Int16 range', () => {
    const chunker = new PcmChunker(16000, 16000, 4);
    const [chunk] = chunker.push([new Float32Array([2, -2, 1, -1])]);
    expect(Array.from(chunk.pcm)).toEqual([32767, -32768, 32767, -32768]);
  });
});
