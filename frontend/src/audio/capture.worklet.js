/**
 * AudioWorklet that turns the microphone into 16-bit PCM mono at a target rate (16 kHz) and posts
 * it in fixed-size chunks, with the chunk's RMS level for the meter.
 *
 * Plain JavaScript with no imports: the file is loaded as-is by audioWorklet.addModule(), in
 * development and in the production build alike.
 */

/** Downmixes and resamples float blocks to Int16 chunks of `chunkSamples` samples. */
export class PcmChunker {
  /**
   * @param {number} inputRate sample rate of the blocks given to push()
   * @param {number} outputRate sample rate of the chunks produced
   * @param {number} chunkSamples samples per produced chunk
   */
  constructor(inputRate, outputRate, chunkSamples) {
    this.step = inputRate / outputRate;
    this.chunkSamples = chunkSamples;
    this.chunk = new Int16Array(chunkSamples);
    this.filled = 0;
    this.sumSquares = 0;
    // Downsampling: average the input samples that fall in each output period (a box filter
    // that also keeps most aliasing out). Upsampling: linear interpolation.
    this.acc = 0;
    this.accCount = 0;
    this.phase = 0;
    this.previous = 0;
  }

  /**
   * @param {Float32Array[]} channels one block, one array per channel
   * @returns {{pcm: Int16Array, level: number}[]} the chunks completed by this block
   */
  push(channels) {
    const out = [];
    if (!channels.length || !channels[0].length) return out;
    const frames = channels[0].length;
    const n = channels.length;
    for (let i = 0; i < frames; i++) {
      let sample = 0;
      for (let c = 0; c < n; c++) sample += channels[c][i];
      sample /= n;
      if (this.step >= 1) {
        this.acc += sample;
        this.accCount += 1;
        this.phase += 1;
        if (this.phase >= this.step) {
          this.phase -= this.step;
          this.emit(this.acc / this.accCount, out);
          this.acc = 0;
          this.accCount = 0;
        }
      } else {
        while (this.phase < 1) {
          this.emit(this.previous + (sample - this.previous) * this.phase, out);
          this.phase += this.step;
        }
        this.phase -= 1;
        this.previous = sample;
      }
    }
    return out;
  }

  /** @private */
  emit(value, out) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.sumSquares += clamped * clamped;
    if (this.filled === this.chunkSamples) {
      out.push({ pcm: this.chunk, level: Math.sqrt(this.sumSquares / this.chunkSamples) });
      this.chunk = new Int16Array(this.chunkSamples);
      this.filled = 0;
      this.sumSquares = 0;
    }
  }
}

if (typeof AudioWorkletProcessor !== 'undefined') {
  class PcmCaptureProcessor extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const opts = (options && options.processorOptions) || {};
      const targetRate = opts.targetSampleRate || 16000;
      const chunkMs = opts.chunkMs || 20;
      // `sampleRate` is the AudioWorkletGlobalScope's rate, i.e. the AudioContext's.
      this.chunker = new PcmChunker(sampleRate, targetRate, Math.round((targetRate * chunkMs) / 1000));
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
