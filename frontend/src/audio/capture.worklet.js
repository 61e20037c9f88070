/**
 * AudioWorklet that turns the microphone into 16-bit PCM mono at a target rate (16 kHz) and posts
 * it in fixed-size chunks, with the chunk's RMS level for the meter.
 *
 * Plain JavaScript with no imports: the file is loaded as-is by audioWorklet.addModule(), in
 * development and in the production build alike.
 */

/** Taps of the anti-aliasing low-pass filter applied before resampling. */
const FILTER_TAPS = 48;

/**
 * Windowed-sinc low-pass FIR, unity gain at DC.
 * @param {number} cutoff cutoff frequency as a fraction of the sample rate (0..0.5)
 * @param {number} taps number of coefficients
 */
function lowPass(cutoff, taps) {
  const h = new Float32Array(taps);
  const middle = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - middle;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * blackman;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

/**
 * Downmixes and resamples float blocks to Int16 chunks of `chunkSamples` samples: a low-pass FIR
 * below the output's Nyquist frequency keeps aliasing out of the speech band (a cheap box filter
 * made Whisper mishear words), then linear interpolation picks the output instants.
 */
export class PcmChunker {
  /**
   * @param {number} inputRate sample rate of the blocks given to push()
   * @param {number} outputRate sample rate of the chunks produced
   * @param {number} chunkSamples samples per produced chunk
   */
  constructor(inputRate, outputRate, chunkSamples) {
    this.step = inputRate / outputRate;
    this.filter = inputRate === outputRate ? null : lowPass((0.45 * Math.min(inputRate, outputRate)) / inputRate, FILTER_TAPS);
    this.history = new Float32Array(FILTER_TAPS);
    this.cursor = 0;
    this.previous = 0;
    // Position of the next output sample, in input samples relative to the current one.
    this.position = 0;
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
    const frames = channels[0].length;
    const n = channels.length;
    for (let i = 0; i < frames; i++) {
      let sample = 0;
      for (let c = 0; c < n; c++) sample += channels[c][i];
      const current = this.filtered(sample / n);
      // Output instants between the previous input sample (-1) and this one (0).
      while (this.position <= 0) {
        this.emit(current + (current - this.previous) * this.position, out);
        this.position += this.step;
      }
      this.position -= 1;
      this.previous = current;
    }
    return out;
  }

  /** @private */
  filtered(sample) {
    if (!this.filter) return sample;
    const taps = this.filter.length;
    this.history[this.cursor] = sample;
    let acc = 0;
    let index = this.cursor;
    for (let k = 0; k < taps; k++) {
      acc += this.filter[k] * this.history[index];
      index = index === 0 ? taps - 1 : index - 1;
    }
    this.cursor = this.cursor === taps - 1 ? 0 : this.cursor + 1;
    return acc;
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
