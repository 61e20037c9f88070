import { afterEach, describe, expect, it, vi } from 'vitest';
import { MicrophoneCapture } from '../../src/audio/microphone';

/** The parts of an AudioContext the capture uses; `refuses` makes it throw as Firefox does. */
function context(sampleRate: number, refuses = false) {
  const source = { connect: vi.fn(), disconnect: vi.fn() };
  return {
    sampleRate,
    source,
    audioWorklet: { addModule: vi.fn(async () => undefined) },
    createMediaStreamSource: vi.fn(() => {
      if (refuses) {
        throw new DOMException(
          'Connecting AudioNodes from AudioContexts with different sample-rate is currently not supported.',
          'NotSupportedError',
        );
      }
      return source;
    }),
  };
}

class FakeWorkletNode {
  static last: FakeWorkletNode | null = null;
  readonly port = { onmessage: null as ((event: MessageEvent) => void) | null };
  constructor(
    readonly context: unknown,
    readonly name: string,
    readonly options: { processorOptions: { chunkMs: number } },
  ) {
    FakeWorkletNode.last = this;
  }
  disconnect() {}
}

function installMicrophone() {
  const track = { stop: vi.fn() };
  vi.stubGlobal('navigator', { mediaDevices: { getUserMedia: vi.fn(async () => ({ getTracks: () => [track] })) } });
  vi.stubGlobal('AudioWorkletNode', FakeWorkletNode);
  return track;
}

afterEach(() => vi.unstubAllGlobals());

describe('MicrophoneCapture', () => {
  it('captures in the 16 kHz context when the browser can resample the microphone', async () => {
    installMicrophone();
    const capture = context(16000);
    const device = context(48000);
    const chunks: ArrayBuffer[] = [];
    const mic = new MicrophoneCapture([capture, device] as unknown as AudioContext[], { onChunk: (c) => chunks.push(c) });
    await mic.start();
    expect(mic.sampleRate).toBe(16000);
    expect(FakeWorkletNode.last?.context).toBe(capture);
    expect(capture.source.connect).toHaveBeenCalledWith(FakeWorkletNode.last);
    expect(device.createMediaStreamSource).not.toHaveBeenCalled();
    FakeWorkletNode.last!.port.onmessage!({ data: { pcm: new ArrayBuffer(640), level: 0.1 } } as MessageEvent);
    expect(chunks).toHaveLength(1);
  });

  it('falls back to the device-rate context where the browser refuses (Firefox), and says its rate', async () => {
    const track = installMicrophone();
    const capture = context(16000, true);
    const device = context(44100);
    const mic = new MicrophoneCapture([capture, device] as unknown as AudioContext[], { onChunk: () => undefined });
    await mic.start();
    expect(mic.sampleRate).toBe(44100);
    expect(FakeWorkletNode.last?.context).toBe(device);
    expect(device.audioWorklet.addModule).toHaveBeenCalled();
    mic.stop();
    expect(track.stop).toHaveBeenCalled();
  });

  it('passes the refusal on when no context takes the microphone', async () => {
    installMicrophone();
    const mic = new MicrophoneCapture([context(16000, true)] as unknown as AudioContext[], { onChunk: () => undefined });
    await expect(mic.start()).rejects.toThrow('different sample-rate');
  });
});
