/** Sample rate of the PCM sent to the server. */
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
  /** 16-bit little-endian mono PCM at CAPTURE_SAMPLE_RATE, CAPTURE_CHUNK_MS long. */
  onChunk: (pcm: ArrayBuffer) => void;
  /** RMS level of the chunk, 0..1. */
  onLevel?: (level: number) => void;
}

/**
 * The microphone, captured through an AudioWorklet on the given AudioContext and delivered as
 * 16 kHz PCM chunks.
 */
export class MicrophoneCapture {
  private stream: MediaStream | null = null;
  private source: MediaStreamAudioSourceNode | null = null;
  private node: AudioWorkletNode | null = null;

  constructor(
    private readonly context: AudioContext,
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
    await this.context.audioWorklet.addModule(workletUrl);
    this.source = this.context.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.context, 'pcm-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetSampleRate: CAPTURE_SAMPLE_RATE, chunkMs: CAPTURE_CHUNK_MS },
    });
    this.node.port.onmessage = (event: MessageEvent<{ pcm: ArrayBuffer; level: number }>) => {
      this.callbacks.onChunk(event.data.pcm);
      this.callbacks.onLevel?.(event.data.level);
    };
    this.source.connect(this.node);
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
