// The page's words: one catalogue per interface language (i18n/<code>.json, written by
// hand; en.json holds every key). The language is the visitor's own choice (remembered in
// localStorage), else the first of navigator.languages we have, else English.
//
// Markup asks for its words with data-i18n="key" (the element's text) and
// data-i18n-<attribute>="key" (aria-label, title, placeholder); scripts call t(key, vars).
// "{name}" in a message is replaced by vars.name.

export const UI_LANGUAGES = ['en', 'ko', 'ja', 'zh', 'es', 'fr', 'de'];
const STORAGE_KEY = 'dragoman.uiLanguage';
const ATTRIBUTES = ['aria-label', 'title', 'placeholder'];

let current = 'en';
let messages = {};
let english = {};

/** The interface language for a stored choice and the browser's preferences. */
export function pickLanguage(stored, preferred = []) {
  if (UI_LANGUAGES.includes(stored)) return stored;
  for (const tag of preferred) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (UI_LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

/** The interface language a spoken language code maps to, or null when we have none. */
export function uiLanguageFor(code) {
  const base = String(code ?? '').toLowerCase().split('-')[0];
  return UI_LANGUAGES.includes(base) ? base : null;
}

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled: the browser's preference still applies
  }
}

/** Loads the starting language: the remembered choice, else navigator.languages. */
export async function initLanguage() {
  english = await fetchCatalogue('en');
  await setLanguage(pickLanguage(stored(), navigator.languages ?? [navigator.language]));
}

/** Switches the page's words; `remember`: the visitor chose it (kept for next time). */
export async function setLanguage(code, { remember = false } = {}) {
  const lang = UI_LANGUAGES.includes(code) ? code : 'en';
  messages = lang === 'en' ? english : await fetchCatalogue(lang).catch(() => english);
  current = messages === english ? 'en' : lang;
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, current);
    } catch {
      // not remembered; the page still switches
    }
  }
  translatePage();
  return current;
}

async function fetchCatalogue(code) {
  const res = await fetch(`/i18n/${code}.json`);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json();
}

export function language() {
  return current;
}

/** Whether the catalogue has a message for `key`. */
export function has(key) {
  return key in messages || key in english;
}

/** The message for `key` in the page's language, with {placeholders} filled from vars. */
export function t(key, vars = {}) {
  const text = messages[key] ?? english[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Rewrites every marked element's words in the current language. */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const attr of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
  }
  document.documentElement.lang = current;
  document.title = t('page.title');
}

/** A language's name in the reader's language (Intl.DisplayNames), or null. */
export function languageName(code, inLanguage = current) {
  try {
    const name = new Intl.DisplayNames([inLanguage], { type: 'language' }).of(code);
    return name && name !== code ? name : null;
  } catch {
    return null;
  }
}

/** A language's name in itself (for the language switch: each reader finds their own). */
export function autonym(code) {
  return languageName(code, code) ?? code;
}
