// Shared by the list page (app.js) and the item page (item.js): the gateway's JSON API, the live
// WebSocket with its reconnect rule, and the formats both pages show. Plain ES module, no build
// step: the gateway serves it under a CSP without inline scripts or eval.

const FIRST_RETRY_MS = 250; // reconnect backoff: 0.25 s, doubling, at most 5 s
const MAX_RETRY_MS = 5000;

// GET a JSON document of the gateway; throws an Error with .status and .body on a refusal.
export async function getJSON(path) {
  const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  return readReply(res);
}

// The reply's JSON body, or an Error carrying the gateway's words ({error, message}).
export async function readReply(res) {
  const body = res.status === 204 ? {} : await res.json().catch(() => null);
  if (res.ok && body) return body;
  const err = new Error((body && (body.message || body.error)) || `The server answered ${res.status}.`);
  err.status = res.status;
  err.body = body;
  throw err;
}

// The live socket. Keeps the last seq applied per item, so that:
// - events (one per message, or a batch {"type":"events"}) come to onEvent in seq order, each
//   once (seq <= the last one is dropped);
// - a reconnect re-sends the watch with `after` = those seqs and the gateway replays the rest;
// - a jump in seq (should not happen: the gateway repairs gaps) calls onGap(item) after the event.
// onOpen runs on every (re)connect, onResync when the gateway dropped our queue, onStatus with
// "live" or "reconnecting".
export class LiveSocket {
  constructor({ onOpen, onEvent, onResync, onGap, onStatus }) {
    this.handlers = { onOpen, onEvent, onResync, onGap, onStatus };
    this.lastSeq = new Map();
    this.retryMs = FIRST_RETRY_MS;
    this.resyncMs = 0; // resyncs in a row (the mesh unavailable for a catch-up) back off too
    this.ws = null;
    this.connect();
  }

  // A snapshot (from /api/items...) holds the item up to `seq`: never go back below it.
  known(item, seq) {
    if (seq > (this.lastSeq.get(item) || 0)) this.lastSeq.set(item, seq);
  }

  seqOf(item) {
    return this.lastSeq.get(item) || 0;
  }

  watchItems(items) {
    const after = {};
    for (const item of items) if (this.seqOf(item) > 0) after[item] = this.seqOf(item);
    this.send({ type: "watch", items, after });
  }

  watchAll() {
    this.send({ type: "watch", all: true });
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let ws;
    try {
      ws = new WebSocket(scheme + location.host + "/ws");
    } catch (e) {
      this.retryLater();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = FIRST_RETRY_MS;
      this.handlers.onStatus("live");
      this.handlers.onOpen();
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.handlers.onStatus("reconnecting");
      this.retryLater();
    };
  }

  retryLater() {
    setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      return; // not ours to fix; the gateway only sends JSON
    }
    if (msg.type === "resync") {
      setTimeout(() => this.handlers.onResync(), this.resyncMs);
      this.resyncMs = Math.min(Math.max(this.resyncMs * 2, FIRST_RETRY_MS), MAX_RETRY_MS);
    } else if (msg.type === "error") {
      console.warn("gateway:", msg.message);
    } else if (msg.type === "event") {
      this.receiveEvent(msg);
    } else if (msg.type === "events" && Array.isArray(msg.events)) {
      // A batch: what the gateway had queued for this socket, each event in seq order per item.
      for (const ev of msg.events) this.receiveEvent(ev);
    }
  }

  receiveEvent(ev) {
    if (!ev || typeof ev.item !== "string" || !Number.isInteger(ev.seq)) return;
    const have = this.seqOf(ev.item);
    if (ev.seq <= have) return;
    this.resyncMs = 0;
    this.lastSeq.set(ev.item, ev.seq);
    this.handlers.onEvent(ev);
    if (have > 0 && ev.seq !== have + 1 && this.handlers.onGap) this.handlers.onGap(ev.item);
  }
}

// Brings an item's state (the fields of `get`) up to one event of its feed.
export function applyEvent(s, ev) {
  s.seq = ev.seq;
  if (ev.event === "max") {
    s.max = ev.amount;
    s.bidder = ev.bidder;
    s.bids = (s.bids || 0) + 1;
  } else if (ev.event === "extended") {
    s.closes_at = ev.closes_at;
  } else if (ev.event === "closed") {
    Object.assign(s, { status: "closed", winner: ev.winner, amount: ev.amount, reserve_met: ev.reserve_met });
  }
}

// "2d 4h", "1h 05m", "4m 09s", "12s"; "closing…" once the deadline passed; "" without one.
export function countdown(closesAt, now = Date.now()) {
  if (closesAt == null) return "";
  const s = Math.floor((closesAt - now) / 1000);
  if (s <= 0) return "closing…";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(sec)}s`;
  return `${sec}s`;
}

// Sets an element's text; when it changed, flashes it (the .changed animation in style.css).
export function setLive(el, text) {
  if (el.textContent === text) return;
  const hadText = el.textContent !== "";
  el.textContent = text;
  if (!hadText) return;
  el.classList.remove("changed");
  void el.offsetWidth; // restart the animation on a second change in a row
  el.classList.add("changed");
}

// Shows "reconnecting…" while the socket is down.
export function showStatus(state) {
  const el = document.getElementById("live-status");
  el.textContent = state === "live" ? "live" : "reconnecting…";
  el.dataset.state = state;
}

// Every countdown on the page ([data-closes-at]) ticks once a second.
export function tickCountdowns() {
  const tick = () => {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-closes-at]")) {
      el.textContent = countdown(Number(el.dataset.closesAt), now);
    }
  };
  tick();
  setInterval(tick, 1000);
}
