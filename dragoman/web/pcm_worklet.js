// AudioWorklet processors for direct mode with a WebSocket provider (Gemini Live):
//   pcm-capture  the microphone, downsampled to `rate` (16 kHz) PCM16, posted in `chunk`-sample
//                pieces (an ArrayBuffer of Int16 samples, transferred)
//   pcm-player   translated audio posted as {samples: Float32Array, rate} (24 kHz), played
//                back in order at the context's rate (linear interpolation); silence when empty
// Both run on the audio thread; the page only moves buffers.

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate = 16000, chunk = 1600 } = options.processorOptions ?? {};
    this.ratio = sampleRate / rate; // input samples per output sample (e.g. 3 at 48 kHz)
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.chunk = chunk;
    this.out = new Int16Array(chunk);
    this.n = 0;
  }

  process(inputs) {
    const input = inputs[0]?.[0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      // A box filter over each output sample's span of input: enough anti-aliasing for speech.
      this.sum += input[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.ratio) {
        this.phase -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.sum / this.count));
        this.sum = 0;
        this.count = 0;
        this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
        if (this.n === this.chunk) {
          const buffer = this.out.buffer;
          this.port.postMessage(buffer, [buffer]); // transferred: `out` is detached now
          this.out = new Int16Array(this.chunk);
          this.n = 0;
        }
      }
    }
    return true;
  }
}

class PcmPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // [{samples, step}]
    this.pos = 0; // fractional read position in queue[0]
    this.port.onmessage = (e) => {
      if (e.data === 'clear') {
        this.queue = [];
        this.pos = 0;
        return;
      }
      const { samples, rate } = e.data;
      if (samples?.length) this.queue.push({ samples, step: rate / sampleRate });
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    for (let i = 0; i < out.length; i++) {
      const cur = this.queue[0];
      if (!cur) {
        out[i] = 0;
        continue;
      }
      const k = Math.floor(this.pos);
      const frac = this.pos - k;
      const a = cur.samples[k];
      const b = k + 1 < cur.samples.length ? cur.samples[k + 1] : (this.queue[1]?.samples[0] ?? a);
      out[i] = a + (b - a) * frac;
      this.pos += cur.step;
      if (this.pos >= cur.samples.length) {
        this.pos -= cur.samples.length;
        this.queue.shift();
      }
    }
    return true;
  }
}

registerProcessor('pcm-capture', PcmCapture);
registerProcessor('pcm-player', PcmPlayer);
