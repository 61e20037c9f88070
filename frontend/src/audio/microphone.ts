/** Sample rate of the PCM sent to the server, where the browser can capture at it. */
export const CAPTURE_SAMPLE_RATE = 16000;
/** Size of each PCM chunk sent as one binary frame. */
export const CAPTURE_CHUNK_MS = 20;

const workletUrl = new URL('./capture.worklet.js', import.meta.url);

/** The browser's own processing of the microphone; both on by default, as browsers do. */
export interface AudioProcessing {
  /** Keeps the reply, played on speakers, from being heard as the user barging in. */
  echoCancellation: boolean;
  noiseSuppression: boolean;
}

export const DEFAULT_AUDIO_PROCESSING: AudioProcessing = { echoCancellation: true, noiseSuppression: true };

export interface MicrophoneCallbacks {
  /** 16-bit little-endian mono PCM at the capture's sampleRate, CAPTURE_CHUNK_MS long. */
  onChunk: (pcm: ArrayBuffer) => void;
  /** RMS level of the chunk, 0..1. */
  onLevel?: (level: number) => void;
}

/**
 * The microphone, captured through an AudioWorklet and delivered as PCM chunks.
 *
 * It is captured in the first of `contexts` that can take it: the caller's 16 kHz capture context,
 * where the browser resamples the microphone itself (Chrome, Safari), else the device-rate context
 * (Firefox connects a microphone only to a context at its own rate). `sampleRate` then says the
 * chunks' rate, which the server is told.
 */
export class MicrophoneCapture {
  private stream: MediaStream | null = null;
  private source: MediaStreamAudioSourceNode | null = null;
  private node: AudioWorkletNode | null = null;
  /** The rate of the PCM chunks, known once start() has resolved. */
  sampleRate = CAPTURE_SAMPLE_RATE;

  constructor(
    private readonly contexts: AudioContext[],
    private readonly callbacks: MicrophoneCallbacks,
    private readonly processing: AudioProcessing = DEFAULT_AUDIO_PROCESSING,
  ) {}

  async start(): Promise<void> {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error('This browser cannot capture audio here (a secure context, https or localhost, is required).');
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, autoGainControl: true, ...this.processing },
    });
    const context = this.connectSource(this.stream);
    this.sampleRate = context.sampleRate;
    await context.audioWorklet.addModule(workletUrl);
    this.node = new AudioWorkletNode(context, 'pcm-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { chunkMs: CAPTURE_CHUNK_MS },
    });
    this.node.port.onmessage = (event: MessageEvent<{ pcm: ArrayBuffer; level: number }>) => {
      this.callbacks.onChunk(event.data.pcm);
      this.callbacks.onLevel?.(event.data.level);
    };
    this.source!.connect(this.node);
  }

  private connectSource(stream: MediaStream): AudioContext {
    let refusal: unknown = new Error('no audio context to capture in');
    for (const context of this.contexts) {
      try {
        this.source = context.createMediaStreamSource(stream);
        return context;
      } catch (error) {
        refusal = error; // "Connecting AudioNodes from AudioContexts with different sample-rate ..."
      }
    }
    throw refusal;
  }

  stop(): void {
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    this.source?.disconnect();
    this.stream?.getTracks().forEach((track) => track.stop());
    this.node = null;
    this.source = null;
    this.stream = null;
  }
}
