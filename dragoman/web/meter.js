// Audio level metering on top of a Web Audio AnalyserNode.

/** Measures the RMS level of a MediaStream's audio, on demand. */
export class LevelMeter {
  /**
   * @param {AudioContext} audioContext
   * @param {MediaStream} mediaStream  must hold at least one audio track
   * @param {{fftSize?: number}} [options]  analysis window in samples (~21 ms at 48 kHz by default)
   */
  constructor(audioContext, mediaStream, { fftSize = 1024 } = {}) {
    this.source = audioContext.createMediaStreamSource(mediaStream);
    this.analyser = audioContext.createAnalyser();
    this.analyser.fftSize = fftSize;
    this.samples = new Float32Array(this.analyser.fftSize);
    // A silent sink to the destination makes sure the graph is pulled (and so
    // the analyser fed) in every browser, without playing the audio twice:
    // the <audio> element is what the user hears.
    this.sink = audioContext.createGain();
    this.sink.gain.value = 0;
    this.source.connect(this.analyser);
    this.analyser.connect(this.sink);
    this.sink.connect(audioContext.destination);
  }

  /** Root-mean-square of the latest window of samples, 0 (silence) to ~1 (full scale). */
  rms() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    return Math.sqrt(sum / this.samples.length);
  }

  disconnect() {
    for (const node of [this.source, this.analyser, this.sink]) {
      try {
        node.disconnect();
      } catch {
        // Already disconnected, or its context is closed: nothing to undo.
      }
    }
  }
}

/**
 * Maps an RMS value to 0..1 on a decibel scale, for display: speech sits
 * around -30..-10 dBFS, which a linear scale would squash into the bottom
 * fifth of a meter.
 */
export function rmsToLevel(rms, floorDb = -60) {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, 1 - db / floorDb));
}
