// Page wiring: language pickers, Call / Hang up, levels, captions, status,
// and the window.dragoman object the automated tests read.

import { Call } from '/call.js';
import { LevelMeter, rmsToLevel } from '/meter.js';

const FIRST_AUDIO_RMS = 0.01; // remote level that counts as "the interpreter is audible"
// setInterval rather than requestAnimationFrame: rAF is throttled or paused in
// background and headless tabs, which would skew the first-audio timing.
const METER_INTERVAL_MS = 20;
const ERROR_AUTOHIDE_MS = 8000;
const LANGUAGES_RETRY_MS = 3000;

// The call ticket, when the server requires one: the operator's site links to this page
// with ?ticket=… (or sets window.DRAGOMAN_TICKET before this script runs). It is taken out
// of the address bar at once, so a copied link never carries it.
const TICKET = takeParam('ticket') || window.DRAGOMAN_TICKET || null;
// A room invitation (/?room=…): this page joins someone's call as its second person.
const ROOM = takeParam('room');

function takeParam(name) {
  const url = new URL(window.location.href);
  const value = url.searchParams.get(name);
  if (value) {
    url.searchParams.delete(name);
    window.history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  return value;
}

const ACTIVE_STATES = new Set(['connecting', 'connected', 'listening', 'translating', 'speaking']);
const SERVER_STATES = new Set(['listening', 'translating', 'speaking']);
const END_REASONS = {
  hangup: 'the call was hung up',
  max_duration: 'the maximum call duration was reached',
  no_media: 'no audio was received',
  memory_limit: 'the server ran short of memory',
  agent_lost: 'the interpreter stopped unexpectedly',
  agent_unresponsive: 'the interpreter stopped responding',
  error: 'a server error occurred',
};
// What the page says when its caller hangs up an answered call, agent or direct: the words
// an agent's own "ended" message gives (reason "hangup"), which often arrives first.
const HUNG_UP_NOTICE = 'Call ended: You hung up.';
// Endings that are failures, worth the error banner rather than just a note.
const ABNORMAL_END_REASONS = new Set(['memory_limit', 'agent_lost', 'agent_unresponsive', 'error']);

const $ = (id) => document.getElementById(id);
const ui = {
  interpMode: $('interp-mode'),
  invite: $('invite'),
  roomInvited: $('room-invited'),
  roomShare: $('room-share'),
  roomLink: $('room-link'),
  roomMinutes: $('room-minutes'),
  sourceLabel: $('source-label'),
  targetLabel: $('target-label'),
  source: $('source'),
  target: $('target'),
  provider: $('provider'),
  interpretation: $('interpretation'),
  interpretationNote: $('interpretation-note'),
  targetNote: $('target-note'),
  mode: $('mode'),
  call: $('call'),
  hangup: $('hangup'),
  connState: $('conn-state'),
  notice: $('notice'),
  error: $('error'),
  answerMs: $('answer-ms'),
  firstAudioMs: $('first-audio-ms'),
  micLevel: $('mic-level'),
  remoteLevel: $('remote-level'),
  captions: $('captions'),
  remoteAudio: $('remote-audio'),
};

// Read by tests; kept current by the functions below.
const dragoman = {
  state: 'idle',
  callId: null,
  firstAudioMs: null,
  answerMs: null,
  maxRemoteRms: 0,
  captions: [],
  notes: [], // {id, code, message}: notes about utterances (e.g. why one is untranslated)
  inviteUrl: null, // the room link this call handed out
  room: null, // {language} of the room this page joined, or null
  roomEvents: [], // 'joined' / 'peer_left', in order
  conversation: false, // the current call interprets two people (A ⇄ B)
  languages: null,
  // 'simultaneous' | 'consecutive': the interpretation the agent says is in force (null
  // before it says; 'simultaneous' in direct mode: the provider streams).
  interpretation: null,
  // Every `languages` message of the current call: {source, target, mode, interpretation,
  // at: performance.now()} (a test waits for one after the step that causes it).
  languagesLog: [],
  mode: null, // 'agent' | 'direct' once a call is answered
  directReason: null, // 'overflow' | 'requested' in direct mode
  provider: null, // the provider the current call uses
  controlOpen: false, // the call's control channel (captions, switches) is connected
  // [performance.now(), rms] of the interpreter's audio, every METER_INTERVAL_MS (bounded):
  // lets a test measure speech after a given caption arrived, not a running maximum.
  remoteLevels: [],
  states: [], // [performance.now(), state] of every state change (bounded)
  // Call setups still running, hung-up ones included (their answers may still arrive):
  // 0 once every Call button press has finished with whatever it started.
  pendingSetups: 0,
};
window.dragoman = dragoman;
const MAX_LEVEL_SAMPLES = 30000; // 10 minutes at 20 ms

let languagesLoaded = false;
/** The call in progress, or null. See startCall() for its fields. */
let session = null;

// ---------------------------------------------------------------- status

function setState(state) {
  dragoman.state = state;
  if (dragoman.states.length < 1000) dragoman.states.push([performance.now(), state]);
  ui.connState.textContent = state;
  ui.connState.dataset.state = state;
  updateButtons();
}

function updateButtons() {
  const active = ACTIVE_STATES.has(dragoman.state);
  ui.call.disabled = active || !languagesLoaded;
  ui.hangup.disabled = !active;
  ui.provider.disabled = active; // a call keeps its provider; languages can change mid-call
  ui.interpMode.disabled = active || Boolean(ROOM); // and its mode
  // Interpretation can change mid-call, where the call's provider and mode offer a choice.
  ui.interpretation.disabled = interpretationChoices().length < 2 || (active && dragoman.mode === 'direct');
  // Only a connected one-way agent call can become a room, once.
  ui.invite.disabled = !active || dragoman.mode !== 'agent' || dragoman.conversation || Boolean(ROOM) || Boolean(dragoman.inviteUrl);
  ui.invite.hidden = Boolean(ROOM);
}

function setNotice(text) {
  ui.notice.textContent = text;
}

let errorTimer = null;
let errorKind = null;

/** Shows the error banner; non-fatal messages hide themselves after a while. */
function showError(message, { autoHide = false, kind = 'general' } = {}) {
  clearTimeout(errorTimer);
  errorKind = kind;
  ui.error.textContent = message;
  ui.error.hidden = false;
  if (autoHide) errorTimer = setTimeout(hideError, ERROR_AUTOHIDE_MS);
}

function hideError() {
  clearTimeout(errorTimer);
  errorKind = null;
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function resetMetrics() {
  Object.assign(dragoman, {
    callId: null,
    firstAudioMs: null,
    answerMs: null,
    maxRemoteRms: 0,
    remoteLevels: [],
    states: [],
    controlOpen: false,
    serverTimings: null,
    interpretation: null,
    languagesLog: [],
    mode: null,
    directReason: null,
    provider: null,
  });
  showMode(null);
  ui.answerMs.textContent = '—';
  ui.firstAudioMs.textContent = '—';
}

// ---------------------------------------------------------------- languages

async function loadLanguages() {
  try {
    const res = await fetch('/v1/languages');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const data = await res.json();
    catalogue = data;
    fillSelect(ui.source, data.sources ?? [], data.default_source);
    fillProviders(data.providers ?? [], data.provider);
    fillTargets(data.default_target);
    updateInterpretation();
    languagesLoaded = true;
    if (errorKind === 'languages') hideError();
    updateTargetNote();
    updateButtons();
  } catch (err) {
    showError(`Could not load the language list (${err.message}); retrying…`, { kind: 'languages' });
    setTimeout(loadLanguages, LANGUAGES_RETRY_MS);
  }
}

/** The last GET /v1/languages body: languages and providers. */
let catalogue = null;

function providerInfo(name) {
  return (catalogue?.providers ?? []).find((p) => p.name === name) ?? null;
}

function fillProviders(providers, defaultName) {
  ui.provider.replaceChildren(
    ...providers.map((p) => {
      const option = new Option(p.available ? p.title : `${p.title} (not configured)`, p.name);
      option.disabled = !p.available;
      option.title = p.reason || p.note || '';
      return option;
    }),
  );
  selectValue(ui.provider, defaultName);
}

/** Targets follow the chosen provider: the ones it cannot speak are marked with why. */
function fillTargets(wanted) {
  const provider = providerInfo(ui.provider.value);
  let targets = catalogue?.targets ?? [];
  if (conversation()) {
    // Either person may speak either language: both pickers list what can be heard; the
    // server says on Call when the pair needs another provider (and which side it cannot speak).
    fillSelect(ui.target, catalogue?.sources ?? [], wanted ?? ui.target.value);
    return;
  }
  if (provider && provider.name !== catalogue?.provider) {
    targets = (catalogue?.sources ?? []).map(({ code, name }) => {
      const available = provider.targets.includes(code);
      return { code, name, available, reason: available ? '' : `${provider.title} cannot translate into ${name}.` };
    });
  }
  fillSelect(ui.target, targets, wanted ?? ui.target.value);
}

function showMode(text, mode = 'agent') {
  ui.mode.textContent = text ?? '';
  ui.mode.dataset.mode = mode;
  ui.mode.hidden = !text;
}

function fillSelect(select, languages, defaultCode) {
  select.replaceChildren(
    ...languages.map(({ code, name, available = true, reason = '' }) => {
      const option = new Option(available ? name : `${name} (unavailable)`, code);
      option.dataset.available = String(available);
      option.dataset.reason = reason;
      return option;
    }),
  );
  selectValue(select, defaultCode);
}

function selectValue(select, code) {
  if ([...select.options].some((o) => o.value === code)) select.value = code;
}

/** Unavailable targets stay selectable (the server explains why on Call); the note says so up front. */
function updateTargetNote() {
  const option = ui.target.selectedOptions[0];
  const unavailable = option?.dataset.available === 'false';
  ui.targetNote.textContent = unavailable ? option.dataset.reason || `${option.text} is not available.` : '';
  ui.targetNote.hidden = !unavailable;
}

function conversation() {
  return ui.interpMode.value === 'conversation';
}

/** The mode picker relabels the language pickers; a call keeps the mode it started with. */
function onModeChange() {
  const two = conversation();
  ui.sourceLabel.textContent = two ? 'Person A speaks' : 'I speak';
  ui.targetLabel.textContent = two ? 'Person B speaks' : 'Translate to';
  const info = providerInfo(ui.provider.value);
  if (two && info && info.conversation === false) {
    ui.targetNote.textContent = info.conversation_reason || `${info.title} cannot interpret a conversation.`;
    ui.targetNote.hidden = false;
  } else {
    fillTargets(ui.target.value);
    updateTargetNote();
  }
}

// ---------------------------------------------------------------- interpretation

/** The call mode the pickers describe: a room guest's, or the mode picker's. */
function callMode() {
  return ROOM ? 'room' : ui.interpMode.value;
}

/** What the chosen provider and call mode allow, in the catalogue's order. */
function interpretationChoices() {
  const info = providerInfo(ui.provider.value);
  const all = info?.interpretations ?? catalogue?.interpretations ?? [];
  // A conversation (one shared device) is interpreted turn by turn.
  return callMode() === 'conversation' ? all.filter((i) => i === 'consecutive') : all;
}

let interpretationPicked = false; // the person chose one: keep it while it is allowed

/** Before a call: the control follows the provider and mode (their default, or the only one). */
function updateInterpretation() {
  const info = providerInfo(ui.provider.value);
  const choices = interpretationChoices();
  const fallback = catalogue?.interpretation_defaults?.[callMode()];
  const wanted = interpretationPicked && choices.includes(ui.interpretation.value)
    ? ui.interpretation.value
    : info?.interpretation_defaults?.[callMode()] ?? fallback ?? choices[0];
  if (wanted) selectValue(ui.interpretation, wanted);
  for (const option of ui.interpretation.options) option.disabled = !choices.includes(option.value);
  let why = '';
  if (choices.length === 1) {
    why = callMode() === 'conversation'
      ? 'A conversation on one device is interpreted consecutively: each sentence is translated once it ends.'
      : info?.interpretation_reason || `${info?.title ?? 'This interpreter'} offers only one interpretation.`;
  }
  ui.interpretationNote.textContent = why;
  ui.interpretationNote.hidden = !why;
  updateButtons();
}

function onInterpretationChange() {
  interpretationPicked = true;
  // Mid-call: asked of the agent on the control channel; its `languages` answer says what
  // is in force (the control goes back to it when refused).
  session?.call?.setInterpretation(ui.interpretation.value);
}

function onPickerChange() {
  updateTargetNote();
  // Mid-call switch over the data channel; no reconnect.
  session?.call?.setLanguages(ui.source.value, ui.target.value);
}

// ---------------------------------------------------------------- captions

const captionStore = new Map(); // `${id}\n${side}` → {id, side, lang, final, text, stable}
const captionRows = new Map(); // utterance id → <li>

function clearCaptions() {
  captionStore.clear();
  captionRows.clear();
  ui.captions.replaceChildren();
  dragoman.captions = [];
  dragoman.notes = [];
}

function upsertCaption({ id, side, lang, final, text, from = 'self', stable = null }) {
  if (side !== 'source' && side !== 'translation') return;
  const key = `${id}\n${side}`;
  // Ordered channel, but be safe: a partial must never overwrite its final.
  if (captionStore.get(key)?.final && !final) return;
  if (final && !text) {
    // The agent withdrew a partial caption (a cough, not speech): drop it.
    captionStore.delete(key);
    dragoman.captions = [...captionStore.values()];
    const row = captionRows.get(id);
    row?.querySelector(`.caption[data-side="${side}"]`)?.remove();
    if (row && !row.children.length) {
      row.remove();
      captionRows.delete(id);
    }
    return;
  }
  const entry = { id, side, lang, final, text, from, stable: final ? null : stable, at: performance.now() };
  captionStore.set(key, entry);
  dragoman.captions = [...captionStore.values()];
  renderCaption(entry);
}

function renderCaption(entry) {
  const list = ui.captions;
  // Follow new captions only if the reader has not scrolled up to reread.
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  let row = captionRows.get(entry.id);
  if (!row) {
    row = document.createElement('li');
    row.className = 'utterance';
    row.dataset.id = entry.id;
    list.append(row);
    captionRows.set(entry.id, row);
  }

  let el = [...row.children].find((c) => c.dataset.side === entry.side);
  if (!el) {
    el = document.createElement('div');
    el.className = 'caption';
    el.append(Object.assign(document.createElement('span'), { className: 'who' }));
    el.append(Object.assign(document.createElement('span'), { className: 'text' }));
    // Source line above translation, whichever arrives first.
    if (entry.side === 'source') row.prepend(el);
    else row.append(el);
  }
  Object.assign(el.dataset, { id: entry.id, side: entry.side, lang: entry.lang, final: String(entry.final) });
  let speaker = dragoman.conversation ? `Speaker (${langName(entry.lang)})` : `You (${entry.lang})`;
  if (entry.from === 'peer') speaker = `Other person (${langName(entry.lang)})`;
  el.querySelector('.who').textContent = entry.side === 'source' ? speaker : `Interpreter (${entry.lang})`;
  renderText(el.querySelector('.text'), entry);

  if (atBottom) list.scrollTop = list.scrollHeight;
}

/** A partial's committed prefix in normal text, the tail that may still change in a lighter
 *  span (`stable` counts code points, as the agent's Python does). */
function renderText(textEl, { text, stable }) {
  if (stable === null || stable === undefined) {
    delete textEl.dataset.stable;
    textEl.textContent = text;
    return;
  }
  const chars = Array.from(text);
  const cut = Math.min(stable, chars.length);
  textEl.dataset.stable = String(cut);
  const tentative = Object.assign(document.createElement('span'), { className: 'tentative', textContent: chars.slice(cut).join('') });
  textEl.replaceChildren(chars.slice(0, cut).join(''), tentative);
}

function langName(code) {
  return (catalogue?.sources ?? []).find((l) => l.code === code)?.name ?? code;
}

/** A note about one utterance (e.g. "Korean speech needs a cloud provider"), under its captions. */
function renderNote({ id, code, message }) {
  dragoman.notes.push({ id, code, message });
  let row = captionRows.get(id);
  if (!row) {
    row = Object.assign(document.createElement('li'), { className: 'utterance' });
    row.dataset.id = id;
    ui.captions.append(row);
    captionRows.set(id, row);
  }
  const el = Object.assign(document.createElement('div'), { className: 'caption-note', textContent: message });
  el.dataset.code = code;
  row.append(el);
}

// ---------------------------------------------------------------- rooms

async function inviteSomeone() {
  const call = session?.call;
  if (!call) return;
  ui.invite.disabled = true;
  try {
    const room = await call.invite();
    dragoman.inviteUrl = new URL(room.room_url, window.location.origin).href;
    ui.roomLink.value = dragoman.inviteUrl;
    ui.roomMinutes.textContent = String(Math.round((room.expires_at * 1000 - Date.now()) / 60000));
    ui.roomShare.hidden = false;
    ui.roomLink.select();
  } catch (err) {
    showError(err.message || String(err), { autoHide: true });
  }
  updateButtons();
}

/** A room invitation: the host's language is fixed, this person picks their own. */
async function loadRoom() {
  const res = await fetch(`/v1/rooms/${encodeURIComponent(ROOM)}`);
  const data = await readBody(res);
  if (!res.ok) {
    showError(data?.error?.message || `This invitation cannot be used (HTTP ${res.status}).`);
    ui.call.hidden = true;
    return;
  }
  dragoman.room = { language: data.language };
  ui.roomInvited.textContent = `You are invited to talk with someone who speaks ${data.language_name}. Pick the language you speak and press Call.`;
  ui.roomInvited.hidden = false;
  ui.interpMode.closest('.field').hidden = true;
  ui.target.closest('.field').hidden = true;
  ui.provider.closest('.field').hidden = true;
  fillSelect(ui.target, [{ code: data.language, name: data.language_name }], data.language);
  selectValue(ui.provider, data.provider); // the room's: its interpretations apply
  updateInterpretation();
}

async function readBody(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- call lifecycle

/** The Call button's handler: whatever goes wrong is shown, and the page can call again. */
async function startCall() {
  if (session || !languagesLoaded) return;
  const s = (session = {
    t0: performance.now(),
    audioContext: null,
    answered: false, // the call was answered (agent or provider): hanging up ends it
    call: null,
    stream: null,
    micMeter: null,
    remoteMeter: null,
    timer: null,
    ended: false,
  });
  dragoman.pendingSetups += 1;
  try {
    await setUpCall(s);
  } catch (err) {
    if (session !== s || s.call?.closed) return; // hung up meanwhile; already handled
    console.error('dragoman: call setup failed', err);
    showError(err.message || String(err));
    endSession(s, 'failed');
  } finally {
    dragoman.pendingSetups -= 1;
  }
}

async function setUpCall(s) {
  resetMetrics();
  clearCaptions();
  hideError();
  setNotice('');
  setState('connecting');
  // Before any await: made inside the click handler (a user gesture), or browsers keep it
  // suspended.
  s.audioContext = openAudio();

  if (!navigator.mediaDevices?.getUserMedia || !window.RTCPeerConnection) {
    showError('This browser cannot make the call: microphone access needs a secure context (https or localhost) and WebRTC support.');
    endSession(s, 'failed');
    return;
  }

  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    if (session === s) {
      showError(microphoneErrorMessage(err));
      endSession(s, 'failed');
    }
    return;
  }
  if (session !== s) {
    // Hung up while the permission prompt was open.
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  s.stream = stream;
  s.micMeter = new LevelMeter(s.audioContext, stream);
  s.timer = setInterval(() => sampleLevels(s), METER_INTERVAL_MS);

  const call = (s.call = new Call({
    source: ui.source.value,
    target: ui.target.value,
    provider: ui.provider.value || null,
    ticket: TICKET,
    mode: ROOM ? 'room' : ui.interpMode.value,
    room: ROOM,
    // Sent only where the person has a choice; otherwise the server's default applies.
    interpretation: ui.interpretation.disabled ? null : ui.interpretation.value,
  }));
  dragoman.conversation = call.mode === 'conversation';
  dragoman.callTimings = call.timings; // live: filled in as the call is set up
  wireCall(s, call);
  await call.start(stream);
}

/** The page's AudioContext (level meters); throws a readable Error when there is none. */
function openAudio() {
  let audioContext;
  try {
    audioContext = new AudioContext();
    // Not awaited: resume() may settle late and nothing here needs it.
    audioContext.resume().catch((err) => console.warn('dragoman: audio did not resume', err));
    return audioContext;
  } catch (err) {
    audioContext?.close().catch(() => {});
    throw new Error(`This browser could not start audio for the call (${err?.message || err}). Check that an audio device is available, then call again.`);
  }
}

function wireCall(s, call) {
  // Events of a call that is no longer current are stale: ignore them.
  const on = (type, handler) => call.addEventListener(type, (e) => session === s && handler(e.detail));

  on('retry', ({ seconds }) => setNotice(`All interpreters busy, retrying in ${Math.ceil(seconds)} s…`));
  on('direct', ({ reason, provider }) => {
    // The provider streams: the interpretation asked for does not apply to a direct call.
    Object.assign(dragoman, { mode: 'direct', directReason: reason, provider, interpretation: 'simultaneous' });
    selectValue(ui.interpretation, 'simultaneous');
    updateButtons();
    const why = reason === 'overflow' ? ' (overflow: every interpreter is busy)' : '';
    showMode(`Direct to ${providerInfo(provider)?.title ?? provider}${why}`, 'direct');
  });
  on('answer', ({ callId, timings, at }) => {
    if (dragoman.mode !== 'direct') {
      const provider = ui.provider.value || catalogue?.provider;
      Object.assign(dragoman, { mode: 'agent', provider });
      showMode(`Interpreter agent · ${providerInfo(provider)?.title ?? provider}`);
    }
    s.answered = true;
    dragoman.callId = callId;
    dragoman.serverTimings = timings;
    dragoman.answerMs = Math.round(at - s.t0);
    ui.answerMs.textContent = String(dragoman.answerMs);
    setNotice('');
  });
  on('track', ({ stream }) => playRemote(s, stream));
  on('open', () => {
    if (dragoman.state === 'connecting') setState('connected');
    dragoman.controlOpen = true;
    setNotice('');
  });
  on('reconnecting', ({ seconds }) => {
    dragoman.controlOpen = false;
    setNotice(`Captions connection lost; reconnecting in ${seconds} s (the call goes on)…`);
  });
  on('connection', ({ state }) => {
    if (state === 'connected' && dragoman.state === 'connecting') setState('connected');
    if (state === 'failed') {
      showError('Connection failed: the audio link to the server could not be established or was lost.');
      endSession(s, 'failed');
    }
  });
  on('state', ({ state, reason, message }) => {
    if (state === 'ended') onServerEnded(s, reason, message);
    else if (SERVER_STATES.has(state)) setState(state);
  });
  on('caption', upsertCaption);
  on('note', renderNote);
  on('room', ({ event, language }) => {
    dragoman.roomEvents.push(event);
    if (event === 'joined') setNotice(`The other person joined (speaks ${langName(language)}).`);
    if (event === 'peer_left') setNotice('The other person left the call. Hang up when you are done.');
  });
  on('languages', ({ source, target, mode, interpretation }) => {
    dragoman.languages = { source, target }; // what the agent confirmed it now uses
    if (dragoman.languagesLog.length < 1000) dragoman.languagesLog.push({ source, target, mode, interpretation, at: performance.now() });
    selectValue(ui.source, source);
    selectValue(ui.target, target);
    if (interpretation) {
      dragoman.interpretation = interpretation;
      selectValue(ui.interpretation, interpretation);
    }
    updateTargetNote();
  });
  on('error', ({ message, fatal }) => showError(message, { autoHide: !fatal }));
  on('channelclose', () => {
    setNotice('Call ended: the connection to the server was closed.');
    endSession(s, 'ended');
  });
}

function onServerEnded(s, reason, message) {
  let text = message || END_REASONS[reason] || 'the call ended';
  if (!/^call ended/i.test(text)) text = `Call ended: ${text}`;
  setNotice(text);
  if (ABNORMAL_END_REASONS.has(reason)) showError(text);
  endSession(s, 'ended');
}

async function hangUp() {
  const s = session;
  if (!s) return;
  ui.hangup.disabled = true;
  await s.call?.hangup();
  // The server's own "ended" message may have arrived (and said more) meanwhile.
  if (!s.ended) setNotice(s.answered ? HUNG_UP_NOTICE : 'Call cancelled.');
  endSession(s, 'ended');
}

/** Releases everything a session holds; safe to call more than once. */
function endSession(s, finalState) {
  if (s.ended) return;
  s.ended = true;
  clearInterval(s.timer);
  s.call?.close();
  s.micMeter?.disconnect();
  s.remoteMeter?.disconnect();
  s.stream?.getTracks().forEach((t) => t.stop());
  s.audioContext?.close().catch(() => {});
  ui.remoteAudio.srcObject = null;
  ui.micLevel.value = 0;
  ui.remoteLevel.value = 0;
  if (session === s) session = null;
  setState(finalState);
}

function playRemote(s, stream) {
  // The <audio> element plays it; the analyser only measures. (Chrome also
  // feeds a remote WebRTC stream to Web Audio only while a media element plays it.)
  ui.remoteAudio.srcObject = stream;
  ui.remoteAudio.play().catch((err) => console.warn('dragoman: remote audio playback blocked', err));
  if (!s.remoteMeter) s.remoteMeter = new LevelMeter(s.audioContext, stream);
}

function sampleLevels(s) {
  if (s.micMeter) ui.micLevel.value = rmsToLevel(s.micMeter.rms());
  if (!s.remoteMeter) return;
  const rms = s.remoteMeter.rms();
  ui.remoteLevel.value = rmsToLevel(rms);
  if (rms > dragoman.maxRemoteRms) dragoman.maxRemoteRms = rms;
  if (dragoman.remoteLevels.length < MAX_LEVEL_SAMPLES) dragoman.remoteLevels.push([performance.now(), rms]);
  if (dragoman.firstAudioMs === null && rms > FIRST_AUDIO_RMS) {
    dragoman.firstAudioMs = Math.round(performance.now() - s.t0);
    ui.firstAudioMs.textContent = String(dragoman.firstAudioMs);
  }
}

function microphoneErrorMessage(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone access was denied. Allow this page to use the microphone and try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone was found.';
    case 'NotReadableError':
      return 'The microphone could not be opened (is another application using it?).';
    default:
      return `Could not open the microphone: ${err?.message || err}`;
  }
}

// ---------------------------------------------------------------- startup

ui.call.addEventListener('click', startCall);
ui.hangup.addEventListener('click', hangUp);
ui.source.addEventListener('change', onPickerChange);
ui.provider.addEventListener('change', () => {
  fillTargets();
  updateTargetNote();
  onModeChange();
  updateInterpretation();
});
ui.interpMode.addEventListener('change', () => {
  onModeChange();
  updateInterpretation();
});
ui.interpretation.addEventListener('change', onInterpretationChange);
ui.invite.addEventListener('click', inviteSomeone);
ui.target.addEventListener('change', onPickerChange);
ui.error.addEventListener('click', hideError);
// Free the interpreter right away if the tab closes mid-call.
window.addEventListener('pagehide', () => {
  if (!session) return;
  session.call?.hangupNow();
  endSession(session, 'ended');
});

setState('idle');
loadLanguages().then(() => ROOM && loadRoom());
