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
  it('cuts 16 kHz render quanta into 20 ms chunks of Int16, sample for sample', () => {
    const blocks = Array.from(quanta(16000, 1, 440));
    const chunks = run(new PcmChunker(320), blocks);
    expect(chunks).toHaveLength(50);
    expect(chunks.every((c) => c.pcm instanceof Int16Array && c.pcm.length === 320)).toBe(true);
    const input = blocks.flatMap(([block]) => Array.from(block));
    const output = chunks.flatMap((c) => Array.from(c.pcm));
    expect(output.every((value, i) => Math.abs(value - input[i] * 0x7fff) <= 1)).toBe(true);
    // A sine of amplitude 0.5 has an RMS level of 0.354.
    expect(chunks[10].level).toBeCloseTo(0.354, 2);
  });

  it('downmixes channels', () => {
    const [chunk] = run(new PcmChunker(4), [[new Float32Array([0.5, 0.5, 0, 1]), new Float32Array([0.5, -0.5, 0, 0])]]);
    expect(Array.from(chunk.pcm)).toEqual([Math.trunc(0.5 * 0x7fff), 0, 0, Math.trunc(0.5 * 0x7fff)]);
  });

  it('clips to the Int16 range', () => {
    const chunker = new PcmChunker(4);
    const [chunk] = chunker.push([new Float32Array([2, -2, 1, -1])]);
    expect(Array.from(chunk.pcm)).toEqual([32767, -32768, 32767, -32768]);
  });
});
