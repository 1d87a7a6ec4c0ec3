// Page wiring: language pickers, Call / Hang up, levels, captions, status, the transcript,
// and the window.dragoman object the automated tests read. Every word shown comes from the
// catalogue (i18n.js): messages are kept as {key, vars} (or {raw} for the server's own
// words) so a switch of the interface language re-renders them.

import { Call } from '/call.js';
import { UI_LANGUAGES, autonym, has, initLanguage, language, languageName, setLanguage, t, uiLanguageFor } from '/i18n.js';
import { LevelMeter, rmsToLevel } from '/meter.js';
import { toSrt, toText, toWebVtt } from '/transcript.js';

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
// What the page says when its caller hangs up an answered call, agent or direct: the words
// an agent's own "ended" message gives (reason "hangup"), which often arrives first.
const HUNG_UP_NOTICE = { key: 'notice.ended', vars: { why: { key: 'end.hangup' } } };
const CAPTION_SIZES = ['small', 'medium', 'large', 'xlarge'];
const CAPTION_SIZE_KEY = 'dragoman.captionSize';
// Endings that are failures, worth the error banner rather than just a note.
const ABNORMAL_END_REASONS = new Set(['memory_limit', 'agent_lost', 'agent_unresponsive', 'error']);

const $ = (id) => document.getElementById(id);
const ui = {
  interpMode: $('interp-mode'),
  invite: $('invite'),
  roomInvited: $('room-invited'),
  roomShare: $('room-share'),
  roomLink: $('room-link'),
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
  answerLine: $('answer-line'),
  firstAudioLine: $('first-audio-line'),
  answerMs: Object.assign(document.createElement('span'), { id: 'answer-ms', textContent: '—' }),
  firstAudioMs: Object.assign(document.createElement('span'), { id: 'first-audio-ms', textContent: '—' }),
  uiLang: $('ui-lang'),
  captionSize: $('caption-size'),
  captionsEmpty: $('captions-empty'),
  roomShareText: $('room-share-text'),
  unlockAudio: $('unlock-audio'),
  saveTxt: $('save-txt'),
  saveVtt: $('save-vtt'),
  saveSrt: $('save-srt'),
  copyTranscript: $('copy-transcript'),
  transcriptStatus: $('transcript-status'),
  micLevel: $('mic-level'),
  remoteLevel: $('remote-level'),
  captions: $('captions'),
  remoteAudio: $('remote-audio'),
  pushToTalk: $('push-to-talk'),
  talk: $('talk'),
  interpretNow: $('interpret-now'),
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
  // [performance.now(), connectionState] of the call's peer connection (bounded), and how
  // many ICE restarts the call made after losing its media path (a network switch).
  connectionLog: [],
  iceRestarts: 0,
  // Call setups still running, hung-up ones included (their answers may still arrive):
  // 0 once every Call button press has finished with whatever it started.
  pendingSetups: 0,
  uiLanguage: 'en', // the interface language in force
  // Screen Wake Lock during a call: 'held' | 'released' | 'refused' | 'unsupported' | null,
  // and how many times one was asked for (a phone's screen must not sleep mid-call).
  wakeLock: null,
  wakeLockRequests: 0,
  audioUnlocked: false, // the tap on Call has started the page's audio (phones need a gesture)
  lastDownload: null, // {format, name, text} of the last transcript saved
  // Push-to-talk as the agent last confirmed it ({pushToTalk, held, at}; a test waits for
  // one after the step that causes it), and whether the talk button is held on this page.
  talkLog: [],
  talkHeld: false,
};
window.dragoman = dragoman;
const MAX_LEVEL_SAMPLES = 30000; // 10 minutes at 20 ms

let languagesLoaded = false;
/** The call in progress, or null. See startCall() for its fields. */
let session = null;

// ---------------------------------------------------------------- words

/** A message in the page's language: {key, vars} from the catalogue (vars may hold
 *  messages), {lang: code} for a language's name, {raw} for words that are not ours (the
 *  server's, a person's), or a string. */
function render(m) {
  if (m === null || m === undefined) return '';
  if (typeof m === 'string') return m;
  if ('raw' in m) return m.raw;
  if ('lang' in m) return langName(m.lang);
  const vars = Object.fromEntries(Object.entries(m.vars ?? {}).map(([k, v]) => [k, typeof v === 'object' ? render(v) : v]));
  return t(m.key, vars);
}

/** Our words for a code (`${group}.${code}`) where the catalogue has them, else `fallback`. */
function byCode(group, code, fallback) {
  return code && has(`${group}.${code}`) ? { key: `${group}.${code}` } : { raw: fallback ?? '' };
}

function langName(code) {
  return languageName(code) ?? (catalogue?.sources ?? []).find((l) => l.code === code)?.name ?? code;
}

const shown = { notice: null, error: null, mode: null, targetNote: null, interpretationNote: null, roomInvited: null, roomShare: null, transcript: null };

/** Re-renders everything with words in it after the interface language changed. */
function relocalize() {
  dragoman.uiLanguage = language();
  ui.uiLang.value = language();
  ui.connState.textContent = t(`state.${dragoman.state}`);
  renderDebug();
  if (catalogue) {
    fillSelect(ui.source, catalogue.sources ?? [], ui.source.value);
    fillProviders(catalogue.providers ?? [], ui.provider.value);
    if (dragoman.room) fillSelect(ui.target, [{ code: dragoman.room.language, name: dragoman.room.languageName }], dragoman.room.language);
    else fillTargets(ui.target.value);
  }
  setNotice(shown.notice);
  if (!ui.error.hidden) ui.error.textContent = render(shown.error);
  showMode(shown.mode, ui.mode.dataset.mode);
  setNote(ui.targetNote, 'targetNote', shown.targetNote);
  setNote(ui.interpretationNote, 'interpretationNote', shown.interpretationNote);
  setNote(ui.roomInvited, 'roomInvited', shown.roomInvited);
  ui.roomShareText.textContent = render(shown.roomShare);
  ui.transcriptStatus.textContent = render(shown.transcript);
  for (const entry of captionStore.values()) renderCaption(entry);
  for (const el of ui.captions.querySelectorAll('.caption-note')) el.textContent = render(noteText(el._note));
}

function setNote(el, slot, m) {
  shown[slot] = m;
  el.textContent = render(m);
  el.hidden = !el.textContent;
}

/** The developer timings: inside the closed "Technical details", around the numbers. */
function renderDebug() {
  for (const [line, key, number] of [[ui.answerLine, 'debug.answer', ui.answerMs], [ui.firstAudioLine, 'debug.first_audio', ui.firstAudioMs]]) {
    const [before, after = ''] = t(key, { ms: '\u0000' }).split('\u0000');
    line.replaceChildren(before, number, after);
  }
}

async function switchLanguage(code, options) {
  await setLanguage(code, options);
  relocalize();
}

function fillLanguageSwitch() {
  ui.uiLang.replaceChildren(...UI_LANGUAGES.map((code) => {
    const option = new Option(autonym(code), code);
    option.lang = code;
    return option;
  }));
  ui.uiLang.value = language();
}

// ---------------------------------------------------------------- status

function setState(state) {
  dragoman.state = state;
  if (dragoman.states.length < 1000) dragoman.states.push([performance.now(), state]);
  ui.connState.textContent = t(`state.${state}`);
  ui.connState.dataset.state = state;
  updateButtons();
}

// A keyboard user hung up: Call takes the focus as soon as it is enabled again (the call may
// end by the server's own "ended" before the hang-up returns).
let focusCallWhenFree = false;

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
  updateTalkButtons(active);
  // Keyboard users: the button they pressed turns off, so focus moves to its counterpart.
  const focused = document.activeElement;
  if (focused === ui.call && ui.call.disabled && !ui.hangup.disabled) ui.hangup.focus();
  else if (focused === ui.hangup && ui.hangup.disabled && !ui.call.disabled) ui.call.focus();
  if (focusCallWhenFree && !ui.call.disabled) {
    focusCallWhenFree = false;
    ui.call.focus();
  }
  updateTranscriptButtons();
}

function setNotice(m) {
  shown.notice = m;
  ui.notice.textContent = render(m);
}

let errorTimer = null;
let errorKind = null;

/** Shows the error banner; non-fatal messages hide themselves after a while. */
function showError(message, { autoHide = false, kind = 'general' } = {}) {
  clearTimeout(errorTimer);
  errorKind = kind;
  shown.error = message;
  ui.error.textContent = render(message);
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
    connectionLog: [],
    iceRestarts: 0,
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

/** What went wrong, in our words where the error has a code we know. */
function errorText(err) {
  if (err?.text) return err.text; // the page's own, already a message
  return byCode('errors', err?.code, err?.message || String(err));
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
    showError({ key: 'error.languages', vars: { detail: err.message } }, { kind: 'languages' });
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
      const option = new Option(p.available ? p.title : t('provider.not_configured', { provider: p.title }), p.name);
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
      const reason = available ? '' : t('target.cannot_translate', { provider: provider.title, language: langName(code) });
      return { code, name, available, reason };
    });
  }
  fillSelect(ui.target, targets, wanted ?? ui.target.value);
}

function showMode(m, mode = 'agent') {
  shown.mode = m;
  ui.mode.textContent = render(m);
  ui.mode.dataset.mode = mode;
  ui.mode.hidden = !m;
}

function fillSelect(select, languages, defaultCode) {
  select.replaceChildren(
    ...languages.map(({ code, name, available = true, reason = '' }) => {
      const shownName = languageName(code) ?? name; // in the reader's language
      const option = new Option(available ? shownName : t('target.unavailable_option', { language: shownName }), code);
      option.dataset.available = String(available);
      option.dataset.reason = reason;
      return option;
    }).sort(byName),
  );
  selectValue(select, defaultCode);
}

/** Options in the reader's alphabetical order (their names are in the reader's language). */
function byName(a, b) {
  return a.text.localeCompare(b.text, language());
}

function selectValue(select, code) {
  if ([...select.options].some((o) => o.value === code)) select.value = code;
}

/** Unavailable targets stay selectable (the server explains why on Call); the note says so up front. */
function updateTargetNote() {
  const option = ui.target.selectedOptions[0];
  const unavailable = option?.dataset.available === 'false';
  const why = option?.dataset.reason ? { raw: option.dataset.reason } : { key: 'target.unavailable', vars: { language: { lang: option?.value } } };
  setNote(ui.targetNote, 'targetNote', unavailable ? why : null);
}

function conversation() {
  return ui.interpMode.value === 'conversation';
}

/** The mode picker relabels the language pickers; a call keeps the mode it started with. */
function onModeChange() {
  const two = conversation();
  ui.sourceLabel.dataset.i18n = two ? 'source.label_a' : 'source.label';
  ui.targetLabel.dataset.i18n = two ? 'target.label_b' : 'target.label';
  ui.sourceLabel.textContent = t(ui.sourceLabel.dataset.i18n);
  ui.targetLabel.textContent = t(ui.targetLabel.dataset.i18n);
  const info = providerInfo(ui.provider.value);
  if (two && info && info.conversation === false) {
    const why = info.conversation_reason ? { raw: info.conversation_reason } : { key: 'provider.no_conversation', vars: { provider: info.title } };
    setNote(ui.targetNote, 'targetNote', why);
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
  let why = null;
  if (choices.length === 1) {
    if (callMode() === 'conversation') why = { key: 'interpretation.only_consecutive' };
    else if (info?.interpretation_reason) why = { raw: info.interpretation_reason };
    else why = { key: 'interpretation.only_one', vars: { provider: info?.title ?? { key: 'interpretation.this_interpreter' } } };
  }
  setNote(ui.interpretationNote, 'interpretationNote', why);
  updateButtons();
}

function onInterpretationChange() {
  interpretationPicked = true;
  // Mid-call: asked of the agent on the control channel; its `languages` answer says what
  // is in force (the control goes back to it when refused).
  session?.call?.setInterpretation(ui.interpretation.value);
}

function onPickerChange(event) {
  updateTargetNote();
  // A room's guest sees the page in the language they pick to speak (where we have it).
  const ownLanguage = uiLanguageFor(ui.source.value);
  if (ROOM && event?.target === ui.source && ownLanguage && ownLanguage !== language()) void switchLanguage(ownLanguage);
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
  ui.captionsEmpty.hidden = false;
  setTranscriptStatus(null);
  updateTranscriptButtons();
}

function upsertCaption({ id, side, lang, final, text, from = 'self', stable = null, t_start_ms = 0, t_end_ms = 0 }) {
  if (side !== 'source' && side !== 'translation') return;
  const key = `${id}\n${side}`;
  // Ordered channel, but be safe: a partial must never overwrite its final.
  if (captionStore.get(key)?.final && !final) return;
  if (final && !text) {
    // The agent withdrew a partial caption (a cough, not speech): drop it.
    captionStore.delete(key);
    dragoman.captions = [...captionStore.values()];
    updateTranscriptButtons();
    const row = captionRows.get(id);
    row?.querySelector(`.caption[data-side="${side}"]`)?.remove();
    if (row && !row.children.length) {
      row.remove();
      captionRows.delete(id);
    }
    return;
  }
  const now = performance.now();
  const firstAt = captionStore.get(key)?.firstAt ?? now;
  const entry = { id, side, lang, final, text, from, stable: final ? null : stable, at: now, firstAt, t_start_ms, t_end_ms };
  captionStore.set(key, entry);
  dragoman.captions = [...captionStore.values()];
  ui.captionsEmpty.hidden = true;
  updateTranscriptButtons();
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
  el.querySelector('.who').textContent = speakerOf(entry);
  const textEl = el.querySelector('.text');
  textEl.lang = entry.lang; // the right glyphs for CJK text, the right voice for screen readers
  renderText(textEl, entry);

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

/** Who said a caption line, in the page's language. */
function speakerOf(entry) {
  const language = langName(entry.lang);
  if (entry.side === 'translation') return t('captions.interpreter', { language });
  if (entry.from === 'peer') return t('captions.peer', { language });
  return t(dragoman.conversation ? 'captions.speaker' : 'captions.you', { language });
}

/** A note in our words: the language the pipeline could not speak is the call's other one. */
function noteText({ id, code, message }) {
  if (code !== 'needs_cloud_provider') return byCode('notes', code, message);
  const spoken = captionStore.get(`${id}\nsource`)?.lang;
  const pair = dragoman.languages;
  if (!spoken || !pair) return { raw: message };
  const into = spoken === pair.source ? pair.target : pair.source;
  return { key: 'notes.needs_cloud_provider', vars: { language: langName(into) } };
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
  const el = Object.assign(document.createElement('div'), { className: 'caption-note', textContent: render(noteText({ id, code, message })) });
  el._note = { id, code, message };
  el.dataset.code = code;
  ui.captionsEmpty.hidden = true;
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
    shown.roomShare = { key: 'room.share', vars: { minutes: Math.round((room.expires_at * 1000 - Date.now()) / 60000) } };
    ui.roomShareText.textContent = render(shown.roomShare);
    ui.roomShare.hidden = false;
    ui.roomLink.select();
  } catch (err) {
    showError(errorText(err), { autoHide: true });
  }
  updateButtons();
}

/** A room invitation: the host's language is fixed, this person picks their own. */
async function loadRoom() {
  const res = await fetch(`/v1/rooms/${encodeURIComponent(ROOM)}`);
  const data = await readBody(res);
  if (!res.ok) {
    showError(data?.error ? byCode('errors', data.error.code, data.error.message) : { key: 'room.unusable', vars: { status: res.status } });
    ui.call.hidden = true;
    return;
  }
  dragoman.room = { language: data.language, languageName: data.language_name };
  setNote(ui.roomInvited, 'roomInvited', { key: 'room.invited', vars: { language: { lang: data.language } } });
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
    showError(errorText(err));
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
    showError({ key: 'error.no_webrtc' });
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
  void holdWakeLock(s);
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
  if (ui.pushToTalk.checked) call.pushToTalk = true; // sent once the control channel opens
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
    unlockAudio(audioContext);
    return audioContext;
  } catch (err) {
    audioContext?.close().catch(() => {});
    const text = { key: 'error.audio_start', vars: { detail: err?.message || String(err) } };
    throw Object.assign(new Error(render(text)), { text });
  }
}

function wireCall(s, call) {
  // Events of a call that is no longer current are stale: ignore them.
  const on = (type, handler) => call.addEventListener(type, (e) => session === s && handler(e.detail));

  on('retry', ({ seconds }) => setNotice({ key: 'notice.retry', vars: { seconds: Math.ceil(seconds) } }));
  on('direct', ({ reason, provider }) => {
    // The provider streams: the interpretation asked for does not apply to a direct call.
    Object.assign(dragoman, { mode: 'direct', directReason: reason, provider, interpretation: 'simultaneous' });
    selectValue(ui.interpretation, 'simultaneous');
    // The provider finds the ends of speech itself: push-to-talk is refused, in our words.
    if (call.pushToTalk) call.setPushToTalk(true);
    updateButtons();
    const title = providerInfo(provider)?.title ?? provider;
    showMode({ key: reason === 'overflow' ? 'mode.direct_overflow' : 'mode.direct', vars: { provider: title } }, 'direct');
  });
  on('answer', ({ callId, timings, at }) => {
    if (dragoman.mode !== 'direct') {
      const provider = ui.provider.value || catalogue?.provider;
      Object.assign(dragoman, { mode: 'agent', provider });
      showMode({ key: 'mode.agent', vars: { provider: providerInfo(provider)?.title ?? provider } });
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
    // An ICE restart reopens the channel too: its notice stays until the media is back.
    if (shown.notice?.key !== 'notice.media_reconnecting') setNotice('');
  });
  on('reconnecting', ({ seconds }) => {
    dragoman.controlOpen = false;
    setNotice({ key: 'notice.reconnecting', vars: { seconds } });
  });
  on('connection', ({ state }) => {
    if (dragoman.connectionLog.length < 1000) dragoman.connectionLog.push([performance.now(), state]);
    if (state === 'connected' && dragoman.state === 'connecting') setState('connected');
  });
  // The media path broke (a network switch): the call renews it and goes on.
  on('icerestart', () => {
    dragoman.iceRestarts += 1;
    setNotice({ key: 'notice.media_reconnecting' });
  });
  on('mediarestored', () => setNotice(''));
  on('mediafailed', () => {
    showError({ key: 'error.connection_failed' });
    void call.hangup(); // the agent is freed now, not after its no-media timeout
    endSession(s, 'failed');
  });
  on('state', ({ state, reason, message }) => {
    if (state === 'ended') onServerEnded(s, reason, message);
    else if (SERVER_STATES.has(state)) setState(state);
  });
  on('caption', upsertCaption);
  on('note', renderNote);
  on('room', ({ event, language }) => {
    dragoman.roomEvents.push(event);
    if (event === 'joined') setNotice({ key: 'room.joined', vars: { language: { lang: language } } });
    if (event === 'peer_left') setNotice({ key: 'room.peer_left' });
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
  on('talk', ({ pushToTalk, held }) => {
    if (dragoman.talkLog.length < 1000) dragoman.talkLog.push({ pushToTalk, held, at: performance.now() });
    ui.talk.classList.toggle('live', held);
  });
  on('error', ({ code, message, fatal }) => {
    if (code === 'unsupported_control') {
      // This call's interpreter finds the ends of speech itself: it listens all the time.
      ui.pushToTalk.checked = false;
      s.call.pushToTalk = false;
      releaseTalk();
      s.talkUnsupported = true;
      updateButtons();
    }
    showError(byCode('errors', code, message), { autoHide: !fatal });
  });
  on('channelclose', () => {
    setNotice({ key: 'notice.channel_closed' });
    endSession(s, 'ended');
  });
}

function onServerEnded(s, reason, message) {
  const why = has(`end.${reason}`) ? { key: `end.${reason}` } : message ? { raw: message } : { key: 'notice.ended_unknown' };
  const text = { key: 'notice.ended', vars: { why } };
  setNotice(text);
  if (ABNORMAL_END_REASONS.has(reason)) showError(text);
  endSession(s, 'ended');
}

async function hangUp() {
  const s = session;
  if (!s) return;
  // A disabled button loses focus: Call gets it once the call has ended (updateButtons).
  focusCallWhenFree = document.activeElement === ui.hangup;
  ui.hangup.disabled = true;
  try {
    await s.call?.hangup();
  } finally {
    // The server's own "ended" message may have arrived (and said more) meanwhile; a
    // hang-up that failed (the call was already gone) ends the page's side all the same.
    if (!s.ended) setNotice(s.answered ? HUNG_UP_NOTICE : { key: 'notice.cancelled' });
    endSession(s, 'ended');
  }
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
  releaseWakeLock(s);
  ui.unlockAudio.hidden = true;
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
  ui.remoteAudio.play().catch((err) => {
    // A phone that still blocks sound: one tap on this button starts it.
    console.warn('dragoman: remote audio playback blocked', err);
    if (session === s) ui.unlockAudio.hidden = false;
  });
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
      return { key: 'mic.denied' };
    case 'NotFoundError':
    case 'OverconstrainedError':
      return { key: 'mic.not_found' };
    case 'NotReadableError':
      return { key: 'mic.not_readable' };
    default:
      return { key: 'mic.other', vars: { detail: err?.message || String(err) } };
  }
}

// ---------------------------------------------------------------- phone: screen and sound

/** Keeps the screen on for the call (Screen Wake Lock), where the browser offers it. */
async function holdWakeLock(s) {
  if (!('wakeLock' in navigator)) {
    dragoman.wakeLock = 'unsupported';
    return;
  }
  dragoman.wakeLockRequests += 1;
  try {
    const lock = await navigator.wakeLock.request('screen');
    if (s.ended || session !== s) {
      await lock.release();
      return;
    }
    s.wakeLock = lock;
    dragoman.wakeLock = 'held';
    // The browser drops the lock when the tab is hidden; it is asked for again on return.
    lock.addEventListener('release', () => {
      if (s.wakeLock === lock) s.wakeLock = null;
      dragoman.wakeLock = 'released';
    });
  } catch (err) {
    // Refused (battery saver, no user activation, a headless browser): the call goes on.
    console.warn('dragoman: screen wake lock refused', err);
    dragoman.wakeLock = 'refused';
  }
}

function releaseWakeLock(s) {
  const lock = s.wakeLock;
  s.wakeLock = null;
  if (lock) lock.release().catch(() => {});
  if (dragoman.wakeLock === 'held') dragoman.wakeLock = 'released';
}

/** Unlocks sound on phones that allow it only from a gesture: the tap on Call plays one
 *  silent sample through the call's AudioContext and starts the (still empty) <audio>
 *  element, so the interpreter's voice plays when it arrives. */
function unlockAudio(context) {
  try {
    const source = context.createBufferSource();
    source.buffer = context.createBuffer(1, 1, context.sampleRate);
    source.connect(context.destination);
    source.start();
    ui.remoteAudio.srcObject = new MediaStream();
    ui.remoteAudio.play().catch(() => {}); // an empty stream: nothing to hear yet
    dragoman.audioUnlocked = true;
  } catch (err) {
    console.warn('dragoman: audio could not be unlocked', err);
  }
}

// ---------------------------------------------------------------- transcript

/** The caption lines as the transcript holds them: who (in the page's language), words,
 *  and times since the call started (the page's own clock where a provider gives none). */
function transcriptLines() {
  const t0 = Math.min(...dragoman.captions.map((c) => c.firstAt));
  return dragoman.captions.map((c) => {
    const timed = c.t_end_ms > 0 || c.t_start_ms > 0;
    return {
      speaker: speakerOf(c),
      rank: c.side === 'source' ? 0 : 1,
      text: c.text.replace(/\s*\n\s*/g, ' '),
      start: timed ? c.t_start_ms : Math.round(c.firstAt - t0),
      end: timed ? c.t_end_ms : Math.round(c.at - t0),
    };
  });
}

function transcriptHeading() {
  return t('transcript.heading', { date: new Date().toLocaleString(language()) });
}

const TRANSCRIPT_FORMATS = {
  txt: { type: 'text/plain', make: (lines) => toText(lines, transcriptHeading()) },
  vtt: { type: 'text/vtt', make: toWebVtt },
  srt: { type: 'application/x-subrip', make: toSrt },
};

/** Saves the transcript as a file made in the page (a Blob): nothing goes to the server. */
function saveTranscript(format) {
  if (!dragoman.captions.length) return;
  const { type, make } = TRANSCRIPT_FORMATS[format];
  const text = make(transcriptLines());
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', '-');
  const name = `dragoman-transcript-${stamp}.${format}`;
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  dragoman.lastDownload = { format, name, text };
}

async function copyTranscript() {
  if (!dragoman.captions.length) return;
  try {
    await navigator.clipboard.writeText(toText(transcriptLines(), transcriptHeading()));
    setTranscriptStatus({ key: 'transcript.copied' });
  } catch (err) {
    console.warn('dragoman: copy failed', err);
    setTranscriptStatus({ key: 'transcript.copy_failed' });
  }
}

function setTranscriptStatus(m) {
  shown.transcript = m;
  ui.transcriptStatus.textContent = render(m);
}

function updateTranscriptButtons() {
  const none = dragoman.captions.length === 0;
  for (const button of [ui.saveTxt, ui.saveVtt, ui.saveSrt, ui.copyTranscript]) button.disabled = none;
}

// ---------------------------------------------------------------- caption size

function setCaptionSize(size, { remember = false } = {}) {
  const value = CAPTION_SIZES.includes(size) ? size : 'medium';
  ui.captions.dataset.size = value;
  ui.captionSize.value = value;
  if (remember) {
    try {
      localStorage.setItem(CAPTION_SIZE_KEY, value);
    } catch {
      // not remembered
    }
  }
}

function storedCaptionSize() {
  try {
    return localStorage.getItem(CAPTION_SIZE_KEY);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- ways to talk

/** The talk controls steer an agent call's utterances; a direct call's provider finds the
 *  ends of speech itself. */
function updateTalkButtons(active = ACTIVE_STATES.has(dragoman.state)) {
  const steerable = active && dragoman.mode !== 'direct' && !session?.talkUnsupported;
  ui.talk.hidden = !ui.pushToTalk.checked;
  ui.talk.disabled = !steerable || !ui.pushToTalk.checked;
  ui.interpretNow.disabled = !steerable || ui.pushToTalk.checked;
  if (ui.talk.disabled) releaseTalk();
}

function onPushToTalkChange() {
  releaseTalk();
  session?.call?.setPushToTalk(ui.pushToTalk.checked);
  updateTalkButtons();
}

function pressTalk() {
  if (ui.talk.disabled || dragoman.talkHeld) return;
  dragoman.talkHeld = true;
  ui.talk.setAttribute('aria-pressed', 'true');
  session?.call?.talk(true);
}

function releaseTalk() {
  if (!dragoman.talkHeld) return;
  dragoman.talkHeld = false;
  ui.talk.setAttribute('aria-pressed', 'false');
  ui.talk.classList.remove('live');
  session?.call?.talk(false);
}

/** The space bar holds the talk button, wherever the focus is, except where a key types or
 *  picks something (a field, a menu) or presses another button. */
function spaceTalks(e) {
  if (e.code !== 'Space' || ui.talk.hidden || ui.talk.disabled) return false;
  const el = e.target;
  if (el === ui.talk) return true;
  return !(el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement || el instanceof HTMLButtonElement || el?.isContentEditable);
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
ui.error.addEventListener('keydown', (e) => {
  if (['Enter', ' ', 'Escape'].includes(e.key)) {
    e.preventDefault();
    hideError();
  }
});
$('debug-toggle').addEventListener('click', (e) => {
  const open = e.currentTarget.getAttribute('aria-expanded') !== 'true';
  e.currentTarget.setAttribute('aria-expanded', String(open));
  $('debug').hidden = !open;
});
ui.uiLang.addEventListener('change', () => switchLanguage(ui.uiLang.value, { remember: true }));
ui.captionSize.addEventListener('change', () => setCaptionSize(ui.captionSize.value, { remember: true }));
ui.saveTxt.addEventListener('click', () => saveTranscript('txt'));
ui.saveVtt.addEventListener('click', () => saveTranscript('vtt'));
ui.saveSrt.addEventListener('click', () => saveTranscript('srt'));
ui.copyTranscript.addEventListener('click', copyTranscript);
ui.pushToTalk.addEventListener('change', onPushToTalkChange);
ui.interpretNow.addEventListener('click', () => session?.call?.interpretNow());
ui.talk.addEventListener('pointerdown', (e) => {
  if (e.button !== 0) return;
  ui.talk.setPointerCapture(e.pointerId); // a finger sliding off still holds
  pressTalk();
});
for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) ui.talk.addEventListener(type, releaseTalk);
ui.talk.addEventListener('contextmenu', (e) => e.preventDefault()); // a long press is a hold
document.addEventListener('keydown', (e) => {
  if (!spaceTalks(e)) return;
  e.preventDefault(); // no scrolling, no click
  if (!e.repeat) pressTalk();
});
document.addEventListener('keyup', (e) => {
  if (e.code !== 'Space' || !dragoman.talkHeld) return;
  e.preventDefault();
  releaseTalk();
});
window.addEventListener('blur', releaseTalk); // a key released in another window never comes
ui.unlockAudio.addEventListener('click', () => {
  ui.unlockAudio.hidden = true;
  ui.remoteAudio.play().catch(() => {});
});
// A wake lock is dropped while the tab is hidden: asked for again when the call is seen again.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && session && !session.wakeLock && ACTIVE_STATES.has(dragoman.state)) void holdWakeLock(session);
});
// Free the interpreter right away if the tab closes mid-call.
window.addEventListener('pagehide', () => {
  if (!session) return;
  session.call?.hangupNow();
  endSession(session, 'ended');
});

setCaptionSize(storedCaptionSize());
renderDebug();
setState('idle');
initLanguage()
  .catch((err) => console.warn('dragoman: the interface stays in English', err))
  .then(() => {
    fillLanguageSwitch();
    relocalize();
    return loadLanguages();
  })
  .then(() => ROOM && loadRoom());
