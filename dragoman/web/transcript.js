// A call's captions as files the caller keeps: plain text, WebVTT and SRT. Pure functions
// of the caption lines the page shows; nothing here (or anywhere) sends them to the server.
//
// A line: {speaker, text, start, end, rank} with start/end in ms since the call started (the
// agent's t_start_ms/t_end_ms; the page's own arrival times where a provider gives none) and
// rank 0 for what was said, 1 for its translation.

/** Lines in time order (what was said before its translation, which shares its times). */
export function orderLines(lines) {
  return lines
    .map((line, i) => ({ ...line, i }))
    .sort((a, b) => a.start - b.start || (a.rank ?? 0) - (b.rank ?? 0) || a.i - b.i)
    .map(({ i, rank, ...line }) => line);
}

/** "HH:MM:SS.mmm" (WebVTT) or "HH:MM:SS,mmm" (SRT). */
export function timestamp(ms, separator = '.') {
  const total = Math.max(0, Math.round(ms));
  const pad = (n, width = 2) => String(n).padStart(width, '0');
  const h = Math.floor(total / 3_600_000);
  const m = Math.floor((total % 3_600_000) / 60_000);
  const s = Math.floor((total % 60_000) / 1000);
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(total % 1000, 3)}`;
}

/** A cue must end after it starts: a line without a duration gets one of `minMs`. */
function span({ start, end }, minMs = 500) {
  return [start, end > start ? end : start + minMs];
}

/** One line per caption: "[start – end] Speaker: text", under a heading. */
export function toText(lines, heading) {
  const body = orderLines(lines).map((line) => {
    const [start, end] = span(line);
    return `[${timestamp(start)} – ${timestamp(end)}] ${line.speaker}: ${line.text}`;
  });
  return `${heading}\n\n${body.join('\n')}\n`;
}

/** WebVTT: one cue per caption, its speaker as a voice span. */
export function toWebVtt(lines) {
  const cues = orderLines(lines).map((line, n) => {
    const [start, end] = span(line);
    return `${n + 1}\n${timestamp(start)} --> ${timestamp(end)}\n<v ${escapeVtt(line.speaker)}>${escapeVtt(line.text)}`;
  });
  return `WEBVTT\n\n${cues.join('\n\n')}\n`;
}

/** SRT: numbered cues, "Speaker: text". */
export function toSrt(lines) {
  const cues = orderLines(lines).map((line, n) => {
    const [start, end] = span(line);
    return `${n + 1}\n${timestamp(start, ',')} --> ${timestamp(end, ',')}\n${line.speaker}: ${line.text}`;
  });
  return `${cues.join('\n\n')}\n`;
}

function escapeVtt(text) {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
