import { describe, expect, it, vi } from 'vitest';
import { PcmPlayer, type PlaybackContext } from '../../src/audio/pcmPlayer';
import { FakeAudioContext } from '../doubles/FakeAudioContext';

const RATE = 24000;

/** `ms` of PCM s16le at RATE, every sample = value. */
function pcm(ms: number, value = 1000): ArrayBuffer {
  const samples = new Int16Array((RATE * ms) / 1000).fill(value);
  return samples.buffer;
}

function setup(options: { leadSeconds?: number; onIdle?: () => void } = {}) {
  const context = new FakeAudioContext();
  const player = new PcmPlayer(context as unknown as PlaybackContext, RATE, { leadSeconds: 0.05, ...options });
  return { context, player };
}

describe('PcmPlayer', () => {
  it('starts the first chunk after a short lead and schedules the next ones back to back', () => {
    const { context, player } = setup();
    context.currentTime = 1;
    player.enqueue(pcm(40));
    player.enqueue(pcm(20));
    player.enqueue(pcm(40));

    const starts = context.started.map((s) => s.startedAt);
    expect(starts[0]).toBeCloseTo(1.05);
    expect(starts[1]).toBeCloseTo(1.09);
    expect(starts[2]).toBeCloseTo(1.11);
    expect(player.scheduledSeconds).toBeCloseTo(0.1);
    expect(player.bytesReceived).toBe(pcm(100).byteLength);
    expect(context.started.every((s) => s.connected)).toBe(true);
  });

  it('converts s16le to floats in the buffer', () => {
    const { context, player } = setup();
    player.enqueue(new Int16Array([0x4000, -0x8000, 0]).buffer);
    const data = (context.started[0].buffer as unknown as { getChannelData(): Float32Array }).getChannelData();
    expect(Array.from(data)).toEqual([0.5, -1, 0]);
  });

  it('after an underrun, restarts with the lead instead of scheduling in the past', () => {
    const { context, player } = setup();
    player.enqueue(pcm(20));
    context.advance(0.5);
    player.enqueue(pcm(20));
    expect(context.started[1].startedAt).toBeCloseTo(0.55);
  });

  it('keeps a sample split across two frames', () => {
    const { context, player } = setup();
    const bytes = new Uint8Array(new Int16Array([100, 200, 300]).buffer);
    player.enqueue(bytes.slice(0, 3).buffer);
    player.enqueue(bytes.slice(3).buffer);
    const frames = context.started.map((s) => (s.buffer as unknown as { length: number }).length);
    expect(frames).toEqual([1, 2]);
    const second = (context.started[1].buffer as unknown as { getChannelData(): Float32Array }).getChannelData();
    expect(Math.round(second[0] * 0x8000)).toBe(200);
  });

  it('stop() silences everything queued at once and counts only what was heard', () => {
    const { context, player } = setup({ leadSeconds: 0 });
    player.enqueue(pcm(100));
    player.enqueue(pcm(100));
    player.enqueue(pcm(100));
    context.advance(0.15);
    expect(player.isPlaying).toBe(true);
    player.stop();
    expect(context.started.every((s) => s.stopped)).toBe(true);
    expect(player.isPlaying).toBe(false);
    expect(player.playedSeconds).toBeCloseTo(0.15);
    // A reply after the stop starts fresh, not after the discarded queue.
    player.enqueue(pcm(20));
    expect(context.started[3].startedAt).toBeCloseTo(0.15);
  });

  it('reports played time and calls onIdle when the queue drains', () => {
    const onIdle = vi.fn();
    const { context, player } = setup({ leadSeconds: 0, onIdle });
    player.enqueue(pcm(100));
    player.enqueue(pcm(100));
    context.advance(0.05);
    expect(player.playedSeconds).toBeCloseTo(0.05);
    context.advance(0.1);
    expect(onIdle).not.toHaveBeenCalled();
    context.advance(0.1);
    expect(onIdle).toHaveBeenCalledTimes(1);
    expect(player.playedSeconds).toBeCloseTo(0.2);
    expect(player.isPlaying).toBe(false);
  });

  it('pause() holds the unplayed audio, and resume() plays it on from there', () => {
    const { context, player } = setup({ leadSeconds: 0 });
    player.enqueue(new Int16Array(RATE / 10).map((_, i) => i).buffer); // 100 ms, samples 0, 1, 2, ...
    player.enqueue(pcm(100));
    context.advance(0.05);
    player.pause();
    expect(context.started.every((s) => s.stopped)).toBe(true);
    expect(player.isPaused && player.isPlaying).toBe(true);
    player.enqueue(pcm(100)); // arrives while paused: waits too
    expect(context.started).toHaveLength(2);
    context.advance(1); // the user coughed; nothing plays meanwhile
    expect(player.playedSeconds).toBeCloseTo(0.05);

    player.resume();
    const resumed = context.started.slice(2);
    expect(resumed.map((s) => (s.buffer as unknown as { length: number }).length)).toEqual([
      RATE / 20, RATE / 10, RATE / 10,
    ]);
    const first = (resumed[0].buffer as unknown as { getChannelData(): Float32Array }).getChannelData();
    expect(Math.round(first[0] * 0x8000)).toBe(RATE / 20); // on from the sample where it held
    expect(resumed[0].startedAt).toBeCloseTo(1.05);
    expect(resumed[1].startedAt).toBeCloseTo(1.1);
    context.advance(0.25);
    expect(player.playedSeconds).toBeCloseTo(0.3);
  });

  it('stop() while paused drops the held audio', () => {
    const onIdle = vi.fn();
    const { context, player } = setup({ leadSeconds: 0, onIdle });
    player.enqueue(pcm(100));
    context.advance(0.05);
    player.pause();
    player.stop();
    expect(player.isPlaying || player.isPaused).toBe(false);
    player.resume();
    expect(context.started).toHaveLength(1);
  });
});
