// The item page (item.html?item=NAME): details, price, leader, countdown and bid history, live;
// the bid form for a signed-in person, with the gateway's refusals shown in its own words.

import { LiveSocket, applyEvent, countdown, getJSON, setLive, showStatus, tickCountdowns } from "./live.js";
import { initAccount, onSessionChange, post, refreshSession, session, setSession } from "./session.js";

const name = new URLSearchParams(location.search).get("item") || "";
const BID_TRIES = 3; // a bid lost on the way is sent again with the same id: the mesh stores it once
let state = null; // the item as `get` shows it, kept current by the events
const events = new Map(); // seq -> event, every event the page knows of
let socket = null;
let outbid = false; // the signed-in person led and lost the lead since

const $ = (id) => document.getElementById(id);

function describe(ev) {
  switch (ev.event) {
    case "open": return "Opened";
    case "max": return `${ev.bidder} leads at ${ev.amount}`;
    case "extended": return `Deadline extended to ${new Date(ev.closes_at).toLocaleTimeString()}`;
    case "closed":
      if (ev.winner) return `Closed: ${ev.winner} won at ${ev.amount}`;
      return ev.reserve_met === false ? "Closed: reserve not met" : "Closed: not sold";
    default: return ev.event;
  }
}

function historyEntry(ev) {
  const li = document.createElement("li");
  li.dataset.seq = ev.seq;
  li.dataset.event = ev.event;
  if (ev.amount != null) li.dataset.amount = ev.amount;
  const time = document.createElement("time");
  time.textContent = ev.ts ? new Date(ev.ts).toLocaleTimeString() : "";
  li.append(time, " ", describe(ev));
  return li;
}

function renderHistory() {
  const seqs = [...events.keys()].sort((a, b) => b - a); // newest first
  $("history").replaceChildren(...seqs.map((seq) => historyEntry(events.get(seq))));
}

function statusText(s) {
  if (s.status !== "closed") return "open";
  if (s.reserve_met === undefined || s.reserve_met === null) return "closed";
  return s.reserve_met ? "closed: reserve met" : "closed: reserve not met";
}

function leastBid(s) {
  return s.max == null ? s.start || 1 : s.max + (s.increment || 1);
}

function render() {
  const s = state;
  document.title = `bidmesh: ${s.title || s.item}`;
  $("title").textContent = s.title || s.item;
  $("description").textContent = s.description || "";
  const image = $("image");
  if (s.image_url) {
    image.src = s.image_url;
    image.alt = s.title || s.item;
  }
  image.hidden = !s.image_url;
  setLive($("price"), s.max == null ? "no bids yet" : String(s.max));
  setLive($("leader"), s.bidder || "–");
  const cd = $("countdown");
  if (s.status === "open" && s.closes_at != null) {
    cd.dataset.closesAt = s.closes_at;
    cd.textContent = countdown(s.closes_at);
  } else {
    delete cd.dataset.closesAt;
    cd.textContent = s.status === "closed" ? "closed" : "no deadline";
  }
  $("bids").textContent = String(s.bids || 0);
  $("status").textContent = statusText(s);
  renderBidForm();
  $("item").hidden = false;
}

function renderBidForm() {
  if (!state) return;
  const open = state.status === "open";
  $("bid-form").hidden = !open || !session.name;
  if (!open) $("bid-hint").textContent = "This auction has closed.";
  else if (!session.name) $("bid-hint").textContent = "Sign in to bid.";
  else $("bid-hint").textContent = `Bid at least ${leastBid(state)}.`;
}

function apply(ev) {
  events.set(ev.seq, ev);
  const leaderBefore = state.bidder;
  applyEvent(state, ev);
  const me = session.name;
  if (me && ev.event === "max") {
    // Once outbid, the message follows the price until this person leads again.
    if (ev.bidder === me) showResult(`You lead at ${ev.amount}`);
    else if (leaderBefore === me || outbid) showResult(`You were outbid: the price is now ${ev.amount}`);
    outbid = ev.bidder !== me && (leaderBefore === me || outbid);
  } else if (me && ev.event === "closed" && ev.winner === me) {
    showResult(`You won at ${ev.amount}`);
  }
  $("history").prepend(historyEntry(ev));
  render();
}

// Reads the item and its history; a snapshot older than what the socket brought keeps the newer state.
async function load() {
  try {
    const reply = await getJSON("/api/items/" + encodeURIComponent(name));
    for (const ev of reply.history) events.set(ev.seq, ev);
    if (!state || reply.item.seq >= state.seq) state = reply.item;
    if (socket) socket.known(name, reply.item.seq);
    $("item-error").textContent = "";
    renderHistory();
    render();
    return true;
  } catch (err) {
    $("item-error").textContent = err.status === 404 ? `There is no auction called “${name}”.` : "Could not load the auction: " + err.message;
    return false;
  }
}

function showResult(text) {
  $("bid-error").textContent = "";
  $("bid-result").textContent = text;
}

function newBidId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "web-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sendBid(body) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await post("/api/bid", body);
    } catch (err) {
      const lost = err.status === undefined || err.status >= 500; // no answer, or the mesh was away
      if (!lost || attempt >= BID_TRIES) throw err;
    }
  }
}

async function submitBid(e) {
  e.preventDefault();
  const amount = Number($("amount").value);
  const max = $("max").value === "" ? null : Number($("max").value);
  const body = { item: name, amount, id: newBidId() };
  if (max !== null) body.max = max;
  $("bid-button").disabled = true;
  try {
    const reply = await sendBid(body);
    if (reply.ok) {
      showResult(reply.leading ? `You lead at ${reply.max}` : `You were outbid: the price is now ${reply.max}`);
      outbid = !reply.leading;
      $("bid-form").reset();
    } else {
      $("bid-result").textContent = "";
      $("bid-error").textContent = reply.message || reply.error;
    }
  } catch (err) {
    $("bid-result").textContent = "";
    if (err.status === 401 || (err.body && err.body.error === "csrf")) {
      setSession(null, null);
      $("bid-error").textContent = "Your session has ended: please sign in again.";
    } else {
      $("bid-error").textContent = "Your bid may not have reached the auction: " + err.message;
    }
  } finally {
    $("bid-button").disabled = false;
  }
}

async function start() {
  if (!name) {
    $("item-error").textContent = "No item named in the address (item.html?item=NAME).";
    return;
  }
  $("bid-form").addEventListener("submit", submitBid);
  onSessionChange(renderBidForm);
  initAccount();
  tickCountdowns();
  await load();
  socket = new LiveSocket({
    onOpen: async () => {
      if (!state) await load(); // the first read failed: try again now that the gateway answers
      refreshSession(); // a restarted gateway has forgotten its sessions
      socket.watchItems([name]); // with `after`: the gateway replays what we missed
    },
    onEvent: (ev) => state && ev.item === name && apply(ev),
    onResync: () => load().then(() => socket.watchItems([name])),
    onGap: () => load(),
    onStatus: showStatus,
  });
  if (state) socket.known(name, state.seq);
}

start();
