/**
 * An AudioContext test double with a clock the test moves by hand. Buffer sources record when
 * they were started and stopped; advance() fires `onended` for those that have finished.
 */
export class FakeAudioBufferSource {
  buffer: { duration: number } | null = null;
  onended: (() => void) | null = null;
  startedAt: number | null = null;
  stopped = false;
  connected = false;

  constructor(private readonly context: FakeAudioContext) {}

  connect(): void {
    this.connected = true;
  }

  disconnect(): void {
    this.connected = false;
  }

  start(when = 0): void {
    this.startedAt = when;
    this.context.started.push(this);
  }

  stop(): void {
    this.stopped = true;
  }
}

export class FakeAudioContext {
  static instances: FakeAudioContext[] = [];
  currentTime = 0;
  state: AudioContextState = 'running';
  readonly destination = {} as AudioNode;
  readonly started: FakeAudioBufferSource[] = [];
  readonly sampleRate = 48000;

  constructor() {
    FakeAudioContext.instances.push(this);
  }

  createBuffer(_channels: number, length: number, sampleRate: number) {
    const data = new Float32Array(length);
    return { duration: length / sampleRate, length, sampleRate, getChannelData: () => data };
  }

  createBufferSource(): FakeAudioBufferSource {
    return new FakeAudioBufferSource(this);
  }

  async resume(): Promise<void> {
    this.state = 'running';
  }

  async close(): Promise<void> {
    this.state = 'closed';
  }

  /** Moves the clock and ends the sources whose audio is over. */
  advance(seconds: number): void {
    this.currentTime += seconds;
    for (const source of this.started) {
      const end = (source.startedAt ?? 0) + (source.buffer?.duration ?? 0);
      if (!source.stopped && end <= this.currentTime + 1e-9) {
        source.stopped = true;
        source.onended?.();
      }
    }
  }
}
