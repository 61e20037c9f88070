/** Types of the capture worklet's testable core (the file itself is plain JS for addModule()). */
export declare class PcmChunker {
  constructor(chunkSamples: number);
  push(channels: Float32Array[]): { pcm: Int16Array; level: number }[];
}
