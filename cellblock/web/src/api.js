// The API from the browser: fetch with the user's key, errors as ApiError, server-sent events over fetch.
//
// EventSource cannot send an Authorization header, so events are read from a fetch() body stream and parsed
// here; a dropped connection resumes with Last-Event-ID, as the endpoint allows.

const KEY = "cellblock.key";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY, value);
  else localStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

// Words for statuses whose body is not ours (a proxy's page, a dropped connection).
const STATUS_WORDS = {
  401: "This server needs an API key: paste one in the API key field at the top.",
  403: "This API key may not do that (it lacks the scope).",
  429: "Too many requests for this API key; wait a moment and retry.",
  502: "The server is unreachable (bad gateway).",
  503: "The service is unavailable or its queue is full; retry in a few seconds.",
};

async function asError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = body && typeof body.error === "object" && body.error ? body.error : null;
  let message = err && err.message ? err.message : STATUS_WORDS[response.status] || `HTTP ${response.status}`;
  if (response.status === 401 && err) message += " (paste a key in the API key field at the top)";
  const retry = response.headers.get("Retry-After");
  if (retry && (response.status === 429 || response.status === 503) && !/retry in/i.test(message)) {
    message += ` (Retry-After: ${retry} s)`;
  }
  return new ApiError(response.status, err ? err.code : `http_${response.status}`, message, err ? err.field : null);
}

export async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the Cellblock API (is the server running?)", null);
  }
  if (!response.ok) throw await asError(response);
  return response.json();
}

// A text answer (GET /metrics' Prometheus exposition); errors as for call().
export async function callText(path) {
  let response;
  try {
    response = await fetch(path, { headers: headers() });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the Cellblock API (is the server running?)", null);
  }
  if (!response.ok) throw await asError(response);
  return response.text();
}

function parseBlock(block) {
  const event = { id: "", type: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") data.push(value);
    else if (name === "event") event.type = value;
    else if (name === "id") event.id = value;
  }
  if (!data.length) return null;
  event.data = JSON.parse(data.join("\n"));
  return event;
}

// The complete events at the head of an event-stream buffer, and the rest (a partial event, kept for more text).
// Line ends may be \r\n, \n or \r; a \r at the very end waits, since its \n may come in the next chunk.
export function takeEvents(buffer) {
  let text = buffer.replace(/\r\n|\r(?!$)/g, "\n");
  const events = [];
  let cut;
  while ((cut = text.indexOf("\n\n")) >= 0) {
    const event = parseBlock(text.slice(0, cut));
    text = text.slice(cut + 2);
    if (event) events.push(event);
  }
  return { events, rest: text };
}

// Calls onEvent({id, type, data}) for each event of the job until its result; resolves then.
export async function streamEvents(jobId, onEvent, signal) {
  let last = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    let response;
    try {
      response = await fetch(`/v1/jobs/${jobId}/events`, {
        headers: headers(last ? { "Last-Event-ID": last } : {}),
        signal,
      });
    } catch (e) {
      if (signal && signal.aborted) return;
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    if (!response.ok) throw await asError(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const { events, rest } = takeEvents(buffer + value);
        buffer = rest;
        for (const event of events) {
          if (event.id) last = event.id;
          onEvent(event);
          if (event.type === "result") return;
        }
      }
    } catch (e) {
      if (signal && signal.aborted) return;
    }
    // The stream ended without a result: the server ends it when the job expired, or the connection dropped.
    await new Promise((r) => setTimeout(r, 300));
  }
}
