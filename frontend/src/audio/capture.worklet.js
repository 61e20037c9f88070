/**
 * AudioWorklet that turns the microphone into 16-bit PCM mono and posts it in fixed-size chunks,
 * with the chunk's RMS level for the meter. It does not resample: the microphone is captured in an
 * AudioContext running at the rate the server is told (16 kHz), and the browser's own resampler
 * brings the microphone to it.
 *
 * Plain JavaScript with no imports: the file is loaded as-is by audioWorklet.addModule(), in
 * development and in the production build alike.
 */

/** Downmixes float blocks and cuts them into Int16 chunks of `chunkSamples` samples. */
export class PcmChunker {
  /** @param {number} chunkSamples samples per produced chunk */
  constructor(chunkSamples) {
    this.chunkSamples = chunkSamples;
    this.chunk = new Int16Array(chunkSamples);
    this.filled = 0;
    this.sumSquares = 0;
  }

  /**
   * @param {Float32Array[]} channels one block, one array per channel
   * @returns {{pcm: Int16Array, level: number}[]} the chunks completed by this block
   */
  push(channels) {
    const out = [];
    if (!channels.length || !channels[0].length) return out;
    const n = channels.length;
    for (let i = 0; i < channels[0].length; i++) {
      let sample = 0;
      for (let c = 0; c < n; c++) sample += channels[c][i];
      const clamped = Math.max(-1, Math.min(1, sample / n));
      this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
      this.sumSquares += clamped * clamped;
      if (this.filled === this.chunkSamples) {
        out.push({ pcm: this.chunk, level: Math.sqrt(this.sumSquares / this.chunkSamples) });
        this.chunk = new Int16Array(this.chunkSamples);
        this.filled = 0;
        this.sumSquares = 0;
      }
    }
    return out;
  }
}

if (typeof AudioWorkletProcessor !== 'undefined') {
  class PcmCaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const chunkMs = (options && options.processorOptions && options.processorOptions.chunkMs) || 20;
      // `sampleRate` is the AudioWorkletGlobalScope's rate, i.e. the capture AudioContext's.
      this.chunker = new PcmChunker(Math.round((sampleRate * chunkMs) / 1000));
    }

    process(inputs) {
      const input = inputs[0];
      if (input && input.length) {
        for (const { pcm, level } of this.chunker.push(input)) {
          this.port.postMessage({ pcm: pcm.buffer, level }, [pcm.buffer]);
        }
      }
      return true;
    }
  }

  registerProcessor('pcm-capture', PcmCaptureProcessor);
}
