// Direct mode with Gemini Live: the page speaks the Live API itself, over a WebSocket to the
// constrained endpoint, authorised by the one-use ephemeral token the server minted (its key
// never reaches the page; the token locks the model, the target language and both
// transcriptions). The microphone goes up as 16 kHz PCM16 (`realtimeInput.audio`), the
// translated speech comes back as 24 kHz PCM16 (`serverContent.modelTurn` inline data) and
// plays through an AudioWorklet into a MediaStream, as an agent call's remote track would.
//
// Messages follow the Live API's JSON (the same shapes the google-genai SDK's models define;
// the server hands the page the `setup` it builds from them).

const CAPTURE_RATE = 16000;
const CAPTURE_CHUNK = CAPTURE_RATE / 10; // 100 ms per message
const PLAY_RATE = 24000;
const SETUP_TIMEOUT_MS = 10000;
const RATE_RE = /rate=(\d+)/;

/** The audio graph could not be built (no audio device, a browser without AudioWorklet…). */
export class AudioSetupError extends Error {
  name = 'AudioSetupError';
}

export class GeminiDirect {
  #ws = null;
  #ctx = null;
  #nodes = [];
  #ready = false;
  #closed = false;

  /**
   * @param {{url: string, token: string, setup: object, stream: MediaStream,
   *          onEvent: (type: string, detail?: object) => void}} options
   * onEvent types: track {stream}, ready, source {text}, translation {text},
   *   notice {code}, closed {code, reason, ready}
   */
  constructor({ url, token, setup, stream, onEvent }) {
    this.url = url;
    this.token = token;
    this.setup = setup;
    this.stream = stream;
    this.onEvent = onEvent;
  }

  /**
   * Opens the audio graph and the session; resolves once the server accepted the setup.
   * Rejects with an AbortError when close() came first (nothing is opened after it), or an
   * AudioSetupError when the audio graph cannot be built.
   */
  async start() {
    try {
      await this.#startAudio();
    } catch (err) {
      this.#throwIfClosed();
      throw new AudioSetupError(err?.message || String(err));
    }
    this.#throwIfClosed();
    await this.#openSession();
  }

  async #startAudio() {
    this.#throwIfClosed();
    const ctx = (this.#ctx = new AudioContext());
    await ctx.audioWorklet.addModule('/pcm_worklet.js');
    this.#throwIfClosed();
    if (ctx.state === 'suspended') await ctx.resume().catch(() => {});
    this.#throwIfClosed();
    const player = new AudioWorkletNode(ctx, 'pcm-player', { numberOfInputs: 0, outputChannelCount: [1] });
    const out = ctx.createMediaStreamDestination();
    player.connect(out);
    this.player = player;
    this.onEvent('track', { stream: out.stream });

    const source = ctx.createMediaStreamSource(this.stream);
    const capture = new AudioWorkletNode(ctx, 'pcm-capture', {
      processorOptions: { rate: CAPTURE_RATE, chunk: CAPTURE_CHUNK },
    });
    const sink = ctx.createGain(); // pulls the capture node without playing the microphone
    sink.gain.value = 0;
    source.connect(capture).connect(sink).connect(ctx.destination);
    capture.port.onmessage = (e) => this.#sendAudio(e.data);
    this.#nodes = [source, capture, sink, player, out];
  }

  async #openSession() {
    const ws = (this.#ws = new WebSocket(`${this.url}?access_token=${encodeURIComponent(this.token)}`));
    ws.binaryType = 'arraybuffer';
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the session was not accepted in time')), SETUP_TIMEOUT_MS);
      ws.addEventListener('open', () => ws.send(JSON.stringify({ setup: this.setup })));
      ws.addEventListener('message', (e) => {
        const msg = decode(e.data);
        if (!msg) return;
        if (msg.setupComplete && !this.#ready) {
          this.#ready = true;
          clearTimeout(timer);
          this.onEvent('ready');
          resolve();
          return;
        }
        this.#onMessage(msg);
      });
      ws.addEventListener('close', (e) => {
        clearTimeout(timer);
        // The provider's own words go to the console for whoever debugs.
        if (e.code !== 1000 || !this.#closed) console.warn('dragoman: Gemini session closed', e.code, e.reason);
        const wasReady = this.#ready;
        this.#ready = false;
        if (!wasReady) reject(new Error(`closed before the setup was accepted (${e.code})`));
        if (!this.#closed) this.onEvent('closed', { code: e.code, reason: e.reason, ready: wasReady });
      });
    });
  }

  #throwIfClosed() {
    if (this.#closed) throw new DOMException('The session was closed.', 'AbortError');
  }

  #onMessage(msg) {
    const content = msg.serverContent;
    if (msg.goAway) this.onEvent('notice', { code: 'provider_closing' });
    if (!content) return;
    if (content.inputTranscription?.text) this.onEvent('source', { text: content.inputTranscription.text });
    for (const part of content.modelTurn?.parts ?? []) {
      const blob = part.inlineData;
      if (!blob?.data) continue;
      const rate = Number(RATE_RE.exec(blob.mimeType ?? '')?.[1] ?? PLAY_RATE);
      const pcm = new Int16Array(base64ToBytes(blob.data).buffer);
      const samples = Float32Array.from(pcm, (v) => v / 0x8000);
      this.player.port.postMessage({ samples, rate }, [samples.buffer]);
    }
    if (content.outputTranscription?.text) this.onEvent('translation', { text: content.outputTranscription.text });
    if (content.interrupted) this.player.port.postMessage('clear');
  }

  #sendAudio(buffer) {
    const ws = this.#ws;
    if (!this.#ready || ws?.readyState !== WebSocket.OPEN) return; // nothing before the setup
    const data = bytesToBase64(new Uint8Array(buffer));
    ws.send(JSON.stringify({ realtimeInput: { audio: { data, mimeType: `audio/pcm;rate=${CAPTURE_RATE}` } } }));
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#ready = false;
    this.#ws?.close(1000);
    for (const node of this.#nodes) {
      try {
        node.disconnect();
      } catch {
        // already disconnected
      }
    }
    this.#ctx?.close().catch(() => {});
  }
}

/** A Live API message (JSON in text or binary frames), or null. */
function decode(data) {
  try {
    return JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
  } catch {
    return null;
  }
}

function bytesToBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function base64ToBytes(b64) {
  const s = atob(b64);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}
