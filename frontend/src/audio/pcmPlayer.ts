/** The parts of AudioContext the player uses (so tests can drive it with a fake clock). */
export interface PlaybackContext {
  readonly currentTime: number;
  readonly destination: AudioNode;
  createBuffer(channels: number, length: number, sampleRate: number): AudioBuffer;
  createBufferSource(): AudioBufferSourceNode;
}

export interface PcmPlayerOptions {
  /** Delay before the first chunk after silence, so the next chunk can arrive in time. */
  leadSeconds?: number;
  /** Node the audio goes to; the context's destination by default. */
  output?: AudioNode;
  /** Called when everything scheduled has finished playing. */
  onIdle?: () => void;
}

interface Scheduled {
  node: AudioBufferSourceNode;
  samples: Float32Array;
  start: number;
  end: number;
}

/**
 * Plays streamed PCM s16le mono as it arrives: each chunk becomes an AudioBufferSourceNode
 * scheduled right after the previous one on the context's clock, so playback starts with the
 * first chunk and only `leadSeconds` of buffering. stop() silences everything queued at once;
 * pause() holds what is left (the server pauses a reply when the user may be talking) and
 * resume() plays it on from where it held.
 */
export class PcmPlayer {
  private nextStart = 0;
  private readonly active = new Set<Scheduled>();
  private carry: number | null = null;
  private held: Float32Array[] | null = null;
  private readonly leadSeconds: number;
  private readonly output: AudioNode;
  private readonly onIdle?: () => void;

  bytesReceived = 0;
  scheduledSeconds = 0;
  private finishedSeconds = 0;

  constructor(
    private readonly context: PlaybackContext,
    readonly sampleRate: number,
    options: PcmPlayerOptions = {},
  ) {
    this.leadSeconds = options.leadSeconds ?? 0.04;
    this.output = options.output ?? context.destination;
    this.onIdle = options.onIdle;
  }

  /** Queues one chunk of PCM s16le mono. Chunks may split a sample in two; the odd byte is kept. */
  enqueue(chunk: ArrayBuffer): void {
    this.bytesReceived += chunk.byteLength;
    let bytes = new Uint8Array(chunk);
    if (this.carry !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.carry;
      joined.set(bytes, 1);
      bytes = joined;
      this.carry = null;
    }
    if (bytes.length % 2 === 1) {
      this.carry = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    const frames = bytes.length / 2;
    if (frames === 0) return;

    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const samples = new Float32Array(frames);
    for (let i = 0; i < frames; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;
    this.scheduledSeconds += frames / this.sampleRate;
    if (this.held) this.held.push(samples);
    else this.schedule(samples);
  }

  private schedule(samples: Float32Array): void {
    const buffer = this.context.createBuffer(1, samples.length, this.sampleRate);
    buffer.getChannelData(0).set(samples);
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.output);

    const now = this.context.currentTime;
    // After an underrun (or at the start of a reply) leave a short lead; otherwise play gaplessly.
    const start = this.nextStart > now ? this.nextStart : now + this.leadSeconds;
    const duration = samples.length / this.sampleRate;
    const entry: Scheduled = { node, samples, start, end: start + duration };
    this.nextStart = entry.end;
    this.active.add(entry);
    node.onended = () => {
      if (!this.active.delete(entry)) return;
      this.finishedSeconds += duration;
      if (this.active.size === 0 && !this.held) this.onIdle?.();
    };
    node.start(start);
  }

  /** Silences every scheduled node; returns, in order, the samples each had not played yet. */
  private silence(): Float32Array[] {
    const now = this.context.currentTime;
    const unplayed: Float32Array[] = [];
    for (const entry of [...this.active].sort((a, b) => a.start - b.start)) {
      entry.node.onended = null;
      const played = Math.max(0, Math.min(now, entry.end) - entry.start);
      this.finishedSeconds += played;
      const from = Math.min(entry.samples.length, Math.round(played * this.sampleRate));
      if (from < entry.samples.length) unplayed.push(entry.samples.subarray(from));
      try {
        entry.node.stop();
      } catch {
        // Already stopped or never started: nothing to silence.
      }
      entry.node.disconnect();
    }
    this.active.clear();
    this.nextStart = 0;
    return unplayed;
  }

  /** Stops everything queued or playing, immediately (barge-in, interrupt). */
  stop(): void {
    this.silence();
    this.held = null;
    this.carry = null;
  }

  /** Holds playback where it is; audio that arrives meanwhile waits too. */
  pause(): void {
    if (!this.held) this.held = this.silence();
  }

  /** Plays on from where pause() held. */
  resume(): void {
    const held = this.held;
    if (!held) return;
    this.held = null;
    for (const samples of held) this.schedule(samples);
    if (held.length === 0 && this.active.size === 0) this.onIdle?.();
  }

  get isPaused(): boolean {
    return this.held !== null;
  }

  /** True while audio is queued, playing or held. */
  get isPlaying(): boolean {
    return this.active.size > 0 || (this.held?.length ?? 0) > 0;
  }

  /** Seconds of reply audio actually played so far (finished chunks plus the playing one). */
  get playedSeconds(): number {
    const now = this.context.currentTime;
    let playing = 0;
    for (const entry of this.active) playing += Math.max(0, Math.min(now, entry.end) - entry.start);
    return this.finishedSeconds + playing;
  }
}
