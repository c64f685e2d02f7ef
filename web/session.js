// The account bar of both pages: sign in with a name and token, sign out, and POSTs that carry
// the session's CSRF token (the gateway refuses a POST without it). The session cookie itself is
// HttpOnly: this code never sees it, only the name and csrf the gateway returns.

import { getJSON, readReply } from "./live.js";

export const session = { name: null, csrf: null };
const listeners = [];

// Calls fn(session) now and after each sign-in or sign-out.
export function onSessionChange(fn) {
  listeners.push(fn);
  fn(session);
}

// POST a JSON body with the CSRF token; resolves to the reply body, throws with the gateway's words.
export async function post(path, body) {
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf || "" },
    body: JSON.stringify(body || {}),
  });
  return readReply(res);
}

export function setSession(name, csrf) {
  session.name = name;
  session.csrf = csrf;
  const signedIn = name !== null;
  document.getElementById("signin-form").hidden = signedIn;
  document.getElementById("signed-in").hidden = !signedIn;
  document.getElementById("me").textContent = name || "";
  for (const fn of listeners) fn(session);
}

// The account bar of both pages (static markup: nothing of the user's goes through innerHTML).
const ACCOUNT_BAR = `
  <form id="signin-form" class="signin" hidden>
    <label>Name <input name="name" autocomplete="username" required maxlength="64"></label>
    <label>Token <input name="token" type="password" autocomplete="current-password" required></label>
    <button type="submit">Sign in</button>
    <p id="signin-error" class="error" role="alert"></p>
  </form>
  <p id="signed-in" class="signed-in" hidden>Signed in as <strong id="me"></strong>
    <button id="signout" type="button">Sign out</button></p>`;

// Fills #account, then asks the gateway whether this browser is signed in.
export async function initAccount() {
  document.getElementById("account").innerHTML = ACCOUNT_BAR;
  const form = document.getElementById("signin-form");
  const error = document.getElementById("signin-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const data = new FormData(form);
    try {
      const s = await post("/api/signin", { name: data.get("name").trim(), token: data.get("token") });
      form.reset();
      setSession(s.name, s.csrf);
    } catch (err) {
      error.textContent = err.status === 401 ? "That name and token do not match." : err.message;
    }
  });
  document.getElementById("signout").addEventListener("click", async () => {
    try {
      await post("/api/signout");
    } catch (err) {
      // a session that already ended is signed out all the same
    }
    setSession(null, null);
  });
  await refreshSession();
}

// Asks the gateway who is signed in (after a reconnect: a restarted gateway forgot its sessions).
export async function refreshSession() {
  try {
    const s = await getJSON("/api/session");
    setSession(s.name, s.csrf);
  } catch (err) {
    // Not signed in; or no answer (the gateway is away): keep a known name until a 401 says otherwise.
    if (err.status === 401 || session.name === null) setSession(null, null);
  }
}
