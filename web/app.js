// The list page: the open items, live. Prices and leaders change in place as the socket's
// events arrive; an open event adds an item, a closed one marks it closed (a reload drops it).

import { LiveSocket, applyEvent, getJSON, setLive, showStatus, tickCountdowns } from "./live.js";
import { initAccount, refreshSession } from "./session.js";

const PAGE_SIZE = 20;
const rows = new Map(); // item name -> { li, state }
let nextCursor = null; // the next page's cursor; null when every open item is shown
let pagesShown = 1;
let reloading = null; // the reload under way
let reloadAgain = false; // asked for while one was under way: its reads may predate the watch

const list = document.getElementById("items");
const more = document.getElementById("more");

const socket = new LiveSocket({
  onOpen: () => {
    refreshSession(); // a restarted gateway has forgotten its sessions
    socket.watchAll();
    reload(); // events of the time we were away are not replayed for `all`: read the state again
  },
  onEvent: apply,
  onResync: () => {
    reload();
    socket.watchAll();
  },
  onGap: () => reload(),
  onStatus: showStatus,
});

function priceText(s) {
  return s.max == null ? "no bids yet" : String(s.max);
}

function stateText(s) {
  if (s.status !== "closed") return `${s.bids || 0} bid${s.bids === 1 ? "" : "s"}`;
  if (s.winner) return `closed: won by ${s.winner} at ${s.amount}`;
  return s.reserve_met === false ? "closed: reserve not met" : "closed: not sold";
}

function render(row) {
  const { li, state } = row;
  li.querySelector(".title").textContent = state.title || state.item;
  setLive(li.querySelector(".price"), priceText(state));
  setLive(li.querySelector(".leader"), state.bidder || "–");
  const countdown = li.querySelector(".countdown");
  if (state.status === "open" && state.closes_at != null) {
    countdown.dataset.closesAt = state.closes_at;
  } else {
    delete countdown.dataset.closesAt;
    countdown.textContent = state.status === "closed" ? "closed" : "no deadline";
  }
  li.querySelector(".state").textContent = stateText(state);
  li.classList.toggle("closed", state.status === "closed");
}

function addRow(state, atTop) {
  const li = document.getElementById("item-row").content.firstElementChild.cloneNode(true);
  li.dataset.item = state.item;
  li.querySelector(".item-link").href = "item.html?item=" + encodeURIComponent(state.item);
  const row = { li, state };
  rows.set(state.item, row);
  if (atTop) list.prepend(li);
  else list.append(li);
  render(row);
  return row;
}

// A snapshot replaces what we show unless the socket already brought something newer.
function merge(snapshot) {
  socket.known(snapshot.item, snapshot.seq);
  const row = rows.get(snapshot.item);
  if (!row) return addRow(snapshot, false);
  if (snapshot.seq >= (row.state.seq || 0)) row.state = snapshot;
  else row.state.title = snapshot.title;
  render(row);
}

function apply(ev) {
  let row = rows.get(ev.item);
  if (!row) {
    if (ev.event !== "open") return; // an item of a page not shown
    row = addRow({ item: ev.item, status: "open", seq: ev.seq, bids: 0, max: null, bidder: null }, true);
    getJSON("/api/items/" + encodeURIComponent(ev.item)).then((r) => merge(r.item), () => {});
    updateEmpty();
    return;
  }
  applyEvent(row.state, ev);
  render(row);
}

async function loadPage(cursor) {
  const query = new URLSearchParams({ status: "open", limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  return getJSON("/api/items?" + query);
}

// Reads again as many pages as are shown; an item no longer open moves out.
function reload() {
  if (reloading) {
    reloadAgain = true;
    return;
  }
  reloading = reloadNow().finally(() => {
    reloading = null;
    if (reloadAgain) {
      reloadAgain = false;
      reload();
    }
  });
}

async function reloadNow() {
  const error = document.getElementById("list-error");
  try {
    const seen = new Set();
    let cursor = null;
    for (let page = 0; page < pagesShown; page++) {
      const reply = await loadPage(cursor);
      for (const item of reply.items) {
        seen.add(item.item);
        merge(item);
      }
      cursor = reply.cursor;
      if (!cursor) break;
    }
    if (!cursor) {
      for (const [name, row] of rows) {
        if (!seen.has(name)) {
          row.li.remove();
          rows.delete(name);
        }
      }
    }
    nextCursor = cursor;
    error.textContent = "";
  } catch (err) {
    error.textContent = "Could not load the auctions: " + err.message;
  }
  more.hidden = !nextCursor;
  updateEmpty();
}

function updateEmpty() {
  document.getElementById("empty").hidden = rows.size > 0;
}

more.addEventListener("click", async () => {
  try {
    const reply = await loadPage(nextCursor);
    reply.items.forEach(merge);
    nextCursor = reply.cursor;
    pagesShown++;
  } catch (err) {
    document.getElementById("list-error").textContent = "Could not load more: " + err.message;
  }
  more.hidden = !nextCursor;
});

initAccount();
tickCountdowns();
reload();
