// One interpretation call: the WebRTC peer (audio only; the server's media gateway answers
// it), HTTP signalling (with retry while all interpreters are busy) and the call's control
// channel: a WebSocket carrying the JSON v1 messages (captions, state, language and
// interpretation switches, hang-up), reconnected if the network drops it while the call goes on.
// A call whose media path breaks (a network switch, a longer loss) restarts ICE: a new offer
// over a fresh control socket, answered by the server's media gateway on the same call.
//
// A Call is an EventTarget; every event is a CustomEvent whose `detail` is:
//   retry        {attempt, seconds, message}  server busy (503), waiting before the next try
//   answer       {callId, timings, at}        HTTP answer received; `at` is performance.now()
//   track        {stream}                     remote (interpreted) audio arrived
//   open         —                            control channel open (again, after a reconnect)
//   reconnecting {attempt, seconds}           control channel lost; reconnecting
//   connection   {state}                      RTCPeerConnection.connectionState changed
//   icerestart   {attempt}                    the media path was lost: a new offer (ICE
//                                             restart) goes to the server on the control channel
//   mediarestored —                           the media path is back after ICE restarts
//   mediafailed  —                            the media path is gone for good (never connected,
//                                             or ICE restarts did not bring it back)
//   state        {state, reason, message}     server "state" message
//   caption      {id, side, lang, final, text, t_start_ms, t_end_ms, stable}
//                                             stable: committed leading characters of a
//                                             partial's text (code points), or null
//   languages    {source, target, mode, interpretation}  what the agent now uses (after
//                                             connecting and after every switch)
//   note         {id, code, message}          about one utterance (e.g. why it is untranslated)
//   room         {event, language}            two-party room: 'joined' (guest's language), 'peer_left'
//   error        {code, message, fatal}       server "error" message
//   channelclose —                            control channel closed for good by the server
//   direct       {reason, provider, expiresAt} the call goes straight to the provider
//                                             (direct mode: fleet full, or requested):
//                                             OpenAI over WebRTC, Gemini Live over a
//                                             WebSocket (gemini_direct.js)

const PROTOCOL_VERSION = 1;
const MAX_BUSY_RETRIES = 3;
const MAX_RETRY_WAIT_S = 5;
const ICE_GATHER_CAP_MS = 1000;
const ICE_GRACE_MS = 30;
const ICE_SERVERS_TIMEOUT_MS = 2000;
// Time for the "hangup" message to leave before the socket is closed.
const HANGUP_FLUSH_MS = 100;
// Control-channel close codes after which reconnecting cannot help: the call ended (1000),
// the token is wrong (4401), the call is unknown (4404), a newer connection took over (4409).
const FINAL_CLOSE_CODES = new Set([1000, 4401, 4404, 4409]);
// About 20 s in all: a network switch may leave a phone with no network for several seconds,
// and the call's agent waits that long for audio (DRAGOMAN_NO_MEDIA_TIMEOUT_S) anyway.
const CONTROL_RETRY_MS = [250, 500, 1000, 2000, 4000, 4000, 4000, 4000];
// ICE restarts: after this long 'disconnected' (at once on 'failed'); again if the media is
// not back this long after one; at most this many per loss (the server ends a call that
// hears nothing for its no-media timeout anyway).
const ICE_RESTART_AFTER_MS = 2500;
const ICE_RESTART_RETRY_MS = 6000;
const MAX_ICE_RESTARTS = 5;
// Direct mode: the provider streams transcript deltas; a pause this long closes a caption line.
const DIRECT_CAPTION_GAP_MS = 1200;
const GEMINI = 'gemini-live-translate';

/** A signalling failure, carrying the server's error code and message when it sent one. */
export class CallError extends Error {
  constructor(message, { code = 'error', status = 0 } = {}) {
    super(message);
    this.name = 'CallError';
    this.code = code;
    this.status = status;
  }
}

export class Call extends EventTarget {
  #abort = new AbortController(); // cancels retry waits on hang-up
  #requested = null; // the languages last sent to the server
  #requestedInterpretation = null; // the interpretation last sent (or confirmed)
  #control = null; // {url, token} of the call's control channel
  #ws = null;
  #wsAttempt = 0;
  #mediaUp = false; // the media path connected once: losing it is worth an ICE restart
  #iceTimer = null; // the next ICE restart, while the media path is down
  #iceAttempts = 0; // ICE restarts since the media path was last up
  #pendingIce = null; // {id, sdp}: an ICE restart's offer, sent once the control channel is open
  #iceAwaited = null; // the id of the ICE restart whose answer may be applied

  /** @param {{source: string, target: string, provider?: string, ticket?: string}} options
   *  ticket: the call ticket the operator's site signed, when the server requires one. */
  constructor({ source, target, provider = null, ticket = null, mode = 'one_way', room = null, interpretation = null }) {
    super();
    // 'simultaneous' | 'consecutive'; null: the server's default for the call's mode.
    this.interpretation = interpretation;
    // Push-to-talk: the agent hears only while the talk button is held (sent when the
    // control channel opens, and again after it reconnects).
    this.pushToTalk = false;
    this.held = false;
    this.source = source;
    this.target = target;
    this.provider = provider;
    this.ticket = ticket;
    this.mode = mode; // 'one_way' | 'conversation' (two people: source ⇄ target)
    this.room = room; // a room invitation's token: this call is the room's second person
    this.direct = false; // true once the call talks to the provider itself
    this.callId = null;
    this.pc = null;
    this.dc = null; // direct mode only: the provider's own data channel
    this.gemini = null; // direct mode with Gemini Live: its WebSocket session
    this.closed = false;
    this.iceRestarts = 0; // ICE restarts sent during this call
    // Milliseconds from start() to each step (ice_servers, offer, gathered, answered).
    this.timings = {};
  }

  get channelOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /**
   * Negotiates the call: offer → wait for ICE gathering → POST → answer.
   * Rejects with a CallError (HTTP/server problem) or an AbortError (hung up meanwhile).
   * @param {MediaStream} localStream  the microphone
   */
  async start(localStream) {
    const [track] = localStream.getAudioTracks();
    if (!track) throw new CallError('The microphone stream has no audio track.', { code: 'no_audio_track' });

    const t0 = performance.now();
    // TURN (when the server has it) lets callers on UDP-blocking networks relay over TCP/TLS.
    const iceServers = await fetchIceServers();
    this.#throwIfClosed();
    this.timings.ice_servers = Math.round(performance.now() - t0);
    const pc = (this.pc = new RTCPeerConnection({ iceServers }));
    pc.addTransceiver(track, { direction: 'sendrecv', streams: [localStream] });

    pc.addEventListener('track', (e) => {
      if (e.track.kind !== 'audio') return;
      this.#emit('track', { stream: e.streams[0] ?? new MediaStream([e.track]) });
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.closed) return;
      this.#emit('connection', { state: pc.connectionState });
      this.#watchMedia();
    });
    pc.addEventListener('iceconnectionstatechange', () => this.#watchMedia());

    await pc.setLocalDescription(await pc.createOffer());
    this.timings.offer = Math.round(performance.now() - t0);
    // No trickle ICE: the server gets one offer with the candidates that matter.
    await waitForIceGathering(pc, ICE_GATHER_CAP_MS, { needRelay: iceServers.length > 0 });
    this.#throwIfClosed();
    this.timings.gathered = Math.round(performance.now() - t0);

    const answer = await this.#postOffer();
    this.timings.answered = Math.round(performance.now() - t0);
    if (answer.mode === 'direct') {
      await this.#startDirect(answer, localStream);
      return;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this.#control = { url: answer.control_url, token: answer.control_token };
    this.#openControl();
  }

  /**
   * Direct mode: a new peer connection to the provider, authorised by the short-lived
   * client secret the server minted (the server's API key never reaches the page).
   *
   * The rule after a hang-up, as for an agent's answer: nothing new is opened, and what is
   * open is closed. hangup() tears down whatever this.pc / this.dc / this.gemini hold at
   * that moment, so each is checked for a hang-up right before it is made and stored at once.
   */
  async #startDirect(answer, localStream) {
    this.#throwIfClosed();
    this.direct = true;
    this.#teardown(); // the offer made for an agent is not used
    this.#emit('direct', { reason: answer.reason, provider: answer.provider, expiresAt: answer.expires_at });
    if (answer.provider === GEMINI) {
      await this.#startGeminiDirect(answer, localStream);
      return;
    }
    const pc = (this.pc = new RTCPeerConnection({ iceServers: [] }));
    pc.addTransceiver(localStream.getAudioTracks()[0], { direction: 'sendrecv', streams: [localStream] });
    const dc = (this.dc = pc.createDataChannel('oai-events'));
    const captions = new DirectCaptions((c) => this.#emit('caption', c));
    dc.addEventListener('open', () => this.#emit('open'));
    dc.addEventListener('message', (e) => this.#onProviderEvent(e.data, captions));
    dc.addEventListener('close', () => {
      captions.flush();
      if (!this.closed) this.#emit('channelclose');
    });
    pc.addEventListener('track', (e) => {
      if (e.track.kind === 'audio') this.#emit('track', { stream: e.streams[0] ?? new MediaStream([e.track]) });
    });
    pc.addEventListener('connectionstatechange', () => {
      if (!this.closed) this.#emit('connection', { state: pc.connectionState });
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, ICE_GATHER_CAP_MS);
    this.#throwIfClosed();
    const res = await fetchOrThrow(answer.call_url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${answer.client_secret}`, 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const sdp = await res.text();
    if (!res.ok) {
      // The provider's own words go to the console for whoever debugs; the user gets ours.
      console.warn('dragoman: direct call refused', res.status, sdp.slice(0, 500));
      throw new CallError(`The translation service refused the direct call (HTTP ${res.status}). Please try again later.`, {
        code: 'direct_refused',
        status: res.status,
      });
    }
    this.#throwIfClosed();
    this.#emit('answer', { callId: null, timings: {}, at: performance.now() });
    await pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /** Gemini Live over a WebSocket, with the one-use token the server minted. */
  async #startGeminiDirect(answer, localStream) {
    const { GeminiDirect, AudioSetupError } = await import('/gemini_direct.js');
    this.#throwIfClosed();
    const captions = new DirectCaptions((c) => this.#emit('caption', c));
    const session = (this.gemini = new GeminiDirect({
      url: answer.call_url,
      token: answer.client_secret,
      setup: answer.setup,
      stream: localStream,
      onEvent: (type, detail) => {
        if (this.closed) return;
        if (type === 'track') this.#emit('track', detail);
        else if (type === 'ready') {
          this.#emit('open');
          this.#emit('connection', { state: 'connected' });
        } else if (type === 'source') captions.add('source', this.source, detail.text);
        else if (type === 'translation') captions.add('translation', this.target, detail.text);
        else if (type === 'notice') this.#emit('error', { code: detail.code, message: 'The translation service is ending this session.', fatal: false });
        else if (type === 'closed') {
          captions.flush();
          this.#emit('channelclose');
        }
      },
    }));
    try {
      await session.start();
    } catch (err) {
      this.#throwIfClosed();
      if (err instanceof AudioSetupError) {
        throw new CallError(`This browser could not start the call's audio (${err.message}).`, { code: 'audio_unavailable' });
      }
      console.warn('dragoman: direct call refused', err);
      throw new CallError('The translation service refused the direct call. Please try again later.', { code: 'direct_refused' });
    }
    this.#throwIfClosed();
    this.#emit('answer', { callId: null, timings: {}, at: performance.now() });
  }

  /** OpenAI realtime translation events on the direct call's data channel. */
  #onProviderEvent(raw, captions) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    if (event.type === 'session.input_transcript.delta') captions.add('source', this.source, event.delta ?? '');
    else if (event.type === 'session.output_transcript.delta') captions.add('translation', this.target, event.delta ?? '');
    else if (event.type === 'error') {
      console.warn('dragoman: translation service error', event.error);
      this.#emit('error', { code: 'provider_error', message: 'The translation service reported an error; some speech may not have been translated.', fatal: false });
    }
  }

  /** Switches languages mid-call (no reconnect). Sent once the channel opens if it is not open yet. */
  setLanguages(source, target) {
    if (this.direct) {
      this.#emit('error', { code: 'direct_mode', message: 'A direct call keeps its languages; hang up and call again to change them.', fatal: false });
      return;
    }
    this.source = source;
    this.target = target;
    if (this.channelOpen) this.#sendLanguages();
  }

  /** Switches simultaneous ⇄ consecutive mid-call; answered by a `languages` event (the
   *  mode in force, the old one when refused, after an `error`). */
  setInterpretation(interpretation) {
    if (this.direct) {
      this.#emit('error', { code: 'direct_mode', message: 'A direct call is interpreted simultaneously by the translation service.', fatal: false });
      return;
    }
    this.interpretation = interpretation;
    if (this.channelOpen) this.#sendInterpretation();
  }

  /** Push-to-talk on or off; answered by a `talk` event (or an `error`, unsupported_control). */
  setPushToTalk(on) {
    this.pushToTalk = on;
    this.held = false;
    this.#sendTalkMode();
  }

  /** The talk button pressed or released (push-to-talk on): released, the agent interprets
   *  what it heard at once. False when the control channel is not open. */
  talk(held) {
    if (!this.pushToTalk || held === this.held) return false;
    this.held = held;
    return this.#send({ type: 'talk', held });
  }

  /** Ends the utterance under way now, as a pause would. */
  interpretNow() {
    return this.#send({ type: 'interpret_now' });
  }

  /** Polite hang-up: tell the agent on the control channel, or DELETE the call, then close. */
  async hangup() {
    if (this.closed) return;
    this.closed = true;
    this.#abort.abort();
    if (this.#send({ type: 'hangup' })) await sleep(HANGUP_FLUSH_MS);
    else if (this.callId) await this.#deleteCall();
    this.#teardown();
  }

  /** Best-effort synchronous hang-up for page unload: no waiting is possible there. */
  hangupNow() {
    if (this.closed) return;
    this.closed = true;
    this.#abort.abort();
    this.#send({ type: 'hangup' });
    // The message may not make it out before the page dies; the keepalive DELETE will.
    if (this.callId) void this.#deleteCall();
    this.#teardown();
  }

  /** Closes without telling the server (it ended the call, or the connection failed). */
  close() {
    if (this.closed) return; // a hang-up in progress tears down by itself
    this.closed = true;
    this.#abort.abort();
    this.#teardown();
  }

  async #postOffer() {
    for (let attempt = 0; ; attempt++) {
      // Rebuilt on each try: the user may have changed the pickers while waiting.
      this.#requested = { source: this.source, target: this.target };
      this.#requestedInterpretation = this.interpretation;
      const res = await fetchOrThrow('/v1/calls', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          ...(this.ticket ? { Authorization: `Bearer ${this.ticket}` } : {}),
        },
        body: JSON.stringify({
          sdp: this.pc.localDescription.sdp,
          type: 'offer',
          ...this.#requested,
          mode: this.mode,
          ...(this.provider ? { provider: this.provider } : {}),
          ...(this.room ? { room: this.room } : {}),
          ...(this.interpretation ? { interpretation: this.interpretation } : {}),
        }),
      });
      const data = await readJson(res);

      if (res.ok && data?.mode === 'direct') {
        // Hung up while the POST was in flight: the minted secret lapses by itself, and no
        // session with the provider is opened for it.
        this.#throwIfClosed();
        if (!data.client_secret || !data.call_url) {
          throw new CallError('The server sent a direct-mode answer without a secret.', { code: 'bad_answer', status: res.status });
        }
        return data;
      }
      if (res.ok) {
        if (!data?.call_id || !data?.sdp) {
          throw new CallError('The server sent an answer without a call id or SDP.', { code: 'bad_answer', status: res.status });
        }
        this.callId = data.call_id;
        if (this.closed) {
          // Hung up while the POST was in flight: release the agent we just got.
          await this.#deleteCall(data.control_token);
          this.#throwIfClosed();
        }
        this.#emit('answer', { callId: data.call_id, timings: data.timings_ms ?? {}, at: performance.now() });
        return data;
      }

      this.#throwIfClosed();
      const err = new CallError(data?.error?.message || `The server answered HTTP ${res.status} ${res.statusText}`.trim(), {
        code: data?.error?.code || `http_${res.status}`,
        status: res.status,
      });
      if (res.status !== 503 || attempt >= MAX_BUSY_RETRIES) throw err;

      const seconds = retryDelaySeconds(res.headers.get('Retry-After'), attempt);
      this.#emit('retry', { attempt: attempt + 1, seconds, message: err.message });
      await sleep(seconds * 1000, this.#abort.signal);
    }
  }

  /** Turns this call into a two-party room: returns {room_url, expires_at, language}. */
  async invite() {
    if (!this.callId || !this.#control?.token) throw new CallError('The call is not connected yet.', { code: 'not_connected' });
    const res = await fetch(`/v1/calls/${encodeURIComponent(this.callId)}/invite`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ control_token: this.#control.token }),
    });
    const data = await readJson(res);
    if (!res.ok) {
      throw new CallError(data?.error?.message || `The server answered HTTP ${res.status}`, { code: data?.error?.code || `http_${res.status}`, status: res.status });
    }
    return data;
  }

  #deleteCall(token = this.#control?.token) {
    // keepalive lets the request outlive the page when called on unload. The call's control
    // token proves it is ours (a server with call tickets refuses a DELETE without it).
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    return fetch(`/v1/calls/${encodeURIComponent(this.callId)}`, { method: 'DELETE', keepalive: true, headers }).catch(() => {});
  }

  /** Opens (or reopens) the control channel; it reconnects by itself until the call ends. */
  #openControl() {
    if (this.closed || !this.#control?.url) return;
    const { url, token } = this.#control;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const old = this.#ws;
    const ws = (this.#ws = new WebSocket(`${scheme}//${location.host}${url}?token=${encodeURIComponent(token)}`));
    old?.close(1000); // replaced: its close no longer counts (ws !== this.#ws)
    ws.addEventListener('open', () => {
      this.#wsAttempt = 0;
      if (this.#pendingIce) {
        this.#send({ type: 'ice_restart', ...this.#pendingIce });
        this.#pendingIce = null;
      }
      // The pickers may have changed between the POST and now.
      const req = this.#requested;
      if (req && (req.source !== this.source || req.target !== this.target)) this.#sendLanguages();
      if (this.interpretation && this.interpretation !== this.#requestedInterpretation) this.#sendInterpretation();
      if (this.pushToTalk) {
        this.held = false; // a hold cut short by the reconnect ended with it
        this.#sendTalkMode();
      }
      this.#emit('open');
    });
    ws.addEventListener('message', (e) => this.#onMessage(e.data));
    ws.addEventListener('close', (e) => {
      if (this.closed || ws !== this.#ws) return;
      if (FINAL_CLOSE_CODES.has(e.code) || this.#wsAttempt >= CONTROL_RETRY_MS.length) {
        this.#emit('channelclose');
        return;
      }
      // The network dropped it (or the api replica went away): the call itself goes on.
      const ms = CONTROL_RETRY_MS[this.#wsAttempt++];
      this.#emit('reconnecting', { attempt: this.#wsAttempt, seconds: ms / 1000 });
      setTimeout(() => this.#openControl(), ms);
    });
  }

  /** Keeps the media path up: ICE restarts while it is down (an agent call only). */
  #watchMedia() {
    const pc = this.pc;
    if (this.closed || this.direct || !pc) return;
    const ice = pc.iceConnectionState;
    if (ice === 'connected' || ice === 'completed') {
      this.#mediaUp = true;
      clearTimeout(this.#iceTimer);
      this.#iceTimer = null;
      if (this.#iceAttempts > 0) {
        this.#iceAttempts = 0;
        this.#emit('mediarestored');
      }
      return;
    }
    const failed = ice === 'failed' || pc.connectionState === 'failed';
    if (!this.#mediaUp) {
      if (failed) this.#emit('mediafailed'); // it never connected: nothing to restart
      return;
    }
    if (failed && this.#iceAttempts === 0) this.#restartIce();
    else if (ice === 'disconnected' && !this.#iceTimer) {
      this.#iceTimer = setTimeout(() => this.#restartIce(), ICE_RESTART_AFTER_MS);
    }
  }

  /** A new offer with fresh ICE credentials, for the server to renegotiate the call with. */
  async #restartIce() {
    const pc = this.pc;
    clearTimeout(this.#iceTimer);
    this.#iceTimer = null;
    if (this.closed || !pc || ['connected', 'completed'].includes(pc.iceConnectionState)) return;
    if (this.#iceAttempts >= MAX_ICE_RESTARTS) {
      this.#emit('mediafailed');
      return;
    }
    this.#iceAttempts += 1;
    this.iceRestarts += 1;
    this.#emit('icerestart', { attempt: this.#iceAttempts });
    // Tried again if this one does not bring the media back (its answer may never come).
    this.#iceTimer = setTimeout(() => this.#restartIce(), ICE_RESTART_RETRY_MS);
    try {
      if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      await waitForIceGathering(pc, ICE_GATHER_CAP_MS);
    } catch (err) {
      console.warn('dragoman: ICE restart offer failed', err);
      return;
    }
    if (this.closed) return;
    // Only this offer's answer applies: an older restart's may still arrive (replayed to
    // the new socket) and would not match the credentials the browser now uses.
    this.#pendingIce = { id: `r${this.iceRestarts}`, sdp: pc.localDescription.sdp };
    this.#iceAwaited = this.#pendingIce.id;
    // The network changed under the control socket too (its connection may be dead
    // without knowing it yet): a fresh one carries the offer; the server drops the old.
    this.#openControl();
  }

  #onMessage(raw) {
    if (typeof raw !== 'string') return; // the protocol is JSON text only
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      console.warn('dragoman: ignoring malformed data-channel message', raw);
      return;
    }
    if (msg?.v !== PROTOCOL_VERSION) {
      console.warn('dragoman: ignoring message with unsupported protocol version', msg);
      return;
    }
    switch (msg.type) {
      case 'state':
        this.#emit('state', { state: msg.state, reason: msg.reason ?? null, message: msg.message ?? null });
        break;
      case 'caption': {
        const { id, side, lang, text, t_start_ms, t_end_ms } = msg;
        const from = msg.from === 'peer' ? 'peer' : 'self'; // rooms: the other person's words
        const stable = Number.isInteger(msg.stable) && msg.stable >= 0 ? msg.stable : null;
        this.#emit('caption', { id: String(id), side, lang, final: msg.final === true, text: text ?? '', t_start_ms, t_end_ms, from, stable });
        break;
      }
      case 'note':
        this.#emit('note', { id: String(msg.id ?? ''), code: msg.code ?? '', message: msg.message ?? '' });
        break;
      case 'room':
        this.#emit('room', { event: msg.event, language: msg.language ?? null });
        break;
      case 'languages':
        this.source = msg.source;
        this.target = msg.target;
        this.#requested = { source: msg.source, target: msg.target };
        if (msg.interpretation) this.interpretation = this.#requestedInterpretation = msg.interpretation;
        this.#emit('languages', { source: msg.source, target: msg.target, mode: msg.mode ?? 'one_way', interpretation: msg.interpretation ?? null });
        break;
      case 'talk':
        this.#emit('talk', { pushToTalk: msg.push_to_talk === true, held: msg.held === true });
        break;
      case 'ice_answer':
        // The answer to the latest ICE restart (an older one's is stale).
        if (msg.id === this.#iceAwaited && this.pc?.signalingState === 'have-local-offer' && typeof msg.sdp === 'string') {
          this.#iceAwaited = null;
          this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }).catch((err) => console.warn('dragoman: ICE restart answer refused', err));
        }
        break;
      case 'error':
        this.#emit('error', { code: msg.code ?? 'error', message: msg.message || 'Unknown server error', fatal: msg.fatal === true });
        break;
      default:
        console.debug('dragoman: ignoring unknown message type', msg.type);
    }
  }

  #sendLanguages() {
    this.#requested = { source: this.source, target: this.target };
    this.#send({ type: 'set_languages', ...this.#requested });
  }

  #sendTalkMode() {
    if (this.direct) {
      if (this.pushToTalk) this.#emit('error', { code: 'unsupported_control', message: 'This interpreter cannot take push-to-talk or interpret-now; it keeps listening as before.', fatal: false });
      return;
    }
    this.#send({ type: 'push_to_talk', on: this.pushToTalk });
  }

  #sendInterpretation() {
    this.#requestedInterpretation = this.interpretation;
    this.#send({ type: 'set_interpretation', interpretation: this.interpretation });
  }

  /** Sends a protocol message; false when the channel is not open. */
  #send(message) {
    if (this.direct || !this.channelOpen) return false; // the provider's channel is not ours
    this.#ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
    return true;
  }

  #teardown() {
    clearTimeout(this.#iceTimer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000);
    this.dc?.close();
    this.gemini?.close();
    this.pc?.close();
  }

  #throwIfClosed() {
    if (this.closed) throw new DOMException('The call was hung up.', 'AbortError');
  }

  #emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The server's ICE servers (TURN with short-lived credentials), or none if it has none. */
async function fetchIceServers() {
  try {
    const res = await fetch('/v1/ice-servers', { signal: AbortSignal.timeout(ICE_SERVERS_TIMEOUT_MS) });
    const body = res.ok ? await res.json() : null;
    return Array.isArray(body?.iceServers) ? body.iceServers : [];
  } catch {
    return []; // host candidates still work on open networks
  }
}

/**
 * Resolves when the offer has enough candidates to send: gathering complete, or shortly
 * after the first candidate that matters (a host one; a relay one when TURN is configured),
 * or after capMs regardless. Waiting for "complete" costs ~120 ms in Chrome for nothing:
 * Janus learns any address the offer lacked from the browser's own connectivity checks
 * (peer-reflexive candidates), so a host (or relay) candidate is all it needs to start.
 */
function waitForIceGathering(pc, capMs, { needRelay = false, graceMs = ICE_GRACE_MS } = {}) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    let grace = null;
    const done = () => {
      clearTimeout(timer);
      clearTimeout(grace);
      pc.removeEventListener('icegatheringstatechange', check);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (e) => {
      const type = e.candidate?.type;
      if (grace || !type || (needRelay ? type !== 'relay' : type === 'relay')) return;
      grace = setTimeout(done, graceMs); // siblings of the same kind arrive within a few ms
    };
    const timer = setTimeout(done, capMs);
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/** Seconds to wait before retrying a 503: Retry-After (seconds or HTTP date) if given, else 1, 2, 4 …; capped. */
function retryDelaySeconds(header, attempt) {
  let seconds = NaN;
  if (header) {
    seconds = Number(header);
    if (Number.isNaN(seconds)) seconds = (Date.parse(header) - Date.now()) / 1000;
  }
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 2 ** attempt;
  return Math.min(MAX_RETRY_WAIT_S, Math.max(0.25, seconds));
}

async function fetchOrThrow(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw new CallError(`Could not reach the server: ${err.message}`, { code: 'network' });
  }
}

/** The response body as JSON, or null when it is empty or not JSON. */
async function readJson(res) {
  try {
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** Turns the provider's append-only transcript deltas into caption lines (one per pause). */
class DirectCaptions {
  #emit;
  #lines = { source: null, translation: null };
  #seq = { source: 0, translation: 0 };
  #timers = {};

  constructor(emit) {
    this.#emit = emit;
  }

  add(side, lang, delta) {
    if (!delta) return;
    let line = this.#lines[side];
    if (!line) {
      // The n-th translation line pairs with the n-th source line, as on agent calls.
      this.#seq[side] += 1;
      line = this.#lines[side] = { id: `d${this.#seq[side]}`, side, lang, text: '' };
    }
    line.text += delta;
    this.#emit({ ...line, text: line.text.trim(), final: false });
    clearTimeout(this.#timers[side]);
    this.#timers[side] = setTimeout(() => this.#close(side), DIRECT_CAPTION_GAP_MS);
  }

  flush() {
    this.#close('source');
    this.#close('translation');
  }

  #close(side) {
    clearTimeout(this.#timers[side]);
    const line = this.#lines[side];
    this.#lines[side] = null;
    if (line?.text.trim()) this.#emit({ ...line, text: line.text.trim(), final: true });
  }
}
