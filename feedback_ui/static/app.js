// The labeling page: lease a query, play both clips in sync, send the answer, repeat.
"use strict";

const $ = (id) => document.getElementById(id);
const left = $("left"), right = $("right");
const state = { name: null, query: null, key: null, shownAt: 0, busy: false, poll: null };
const KEYS = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "equal", " ": "equal", x: "skip", X: "skip" };

function randomKey() {
  // crypto.randomUUID needs a secure context, which http://<lan address> is not.
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function setCookieToken(token) {
  document.cookie = `rlkit_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  return { status: res.status, data };
}

function message(text) { $("message").textContent = text || ""; }

function showProgress(p) {
  $("progress").textContent =
    `You have given ${p.labels_done} label${p.labels_done === 1 ? "" : "s"} · ` +
    `${p.queue_depth} ${p.queue_depth === 1 ? "query" : "queries"} waiting`;
}

function setButtons(enabled) {
  document.querySelectorAll(".buttons button").forEach((b) => { b.disabled = !enabled; });
}

function playBoth() {
  left.currentTime = 0;
  right.currentTime = 0;
  Promise.all([left.play(), right.play()]).catch(() => {});
}

// Keep the right clip on the left clip's clock (both loop with the same length).
left.addEventListener("timeupdate", () => {
  if (!left.seeking && !right.seeking && Math.abs(left.currentTime - right.currentTime) > 0.15) {
    right.currentTime = left.currentTime;
  }
});

function loadClips(query) {
  let ready = 0;
  const onReady = () => {
    ready += 1;
    if (ready === 2) {
      playBoth();
      state.shownAt = performance.now();
      setButtons(true);
    }
  };
  left.addEventListener("canplay", onReady, { once: true });
  right.addEventListener("canplay", onReady, { once: true });
  left.src = query.left.url;
  right.src = query.right.url;
}

async function next() {
  clearTimeout(state.poll);
  setButtons(false);
  let res;
  try {
    res = await api("/api/queries/next", { labeler: state.name });
  } catch (e) {
    message("Cannot reach the server; retrying…");
    state.poll = setTimeout(next, 2000);
    return;
  }
  if (res.status === 401) return showLogin("The server needs a token.");
  if (res.status !== 200) {
    message((res.data && JSON.stringify(res.data.detail)) || `error ${res.status}`);
    state.poll = setTimeout(next, 3000);
    return;
  }
  showProgress(res.data.progress);
  const query = res.data.query;
  if (!query) {
    state.query = null;
    document.body.dataset.queryId = "";
    left.removeAttribute("src"); right.removeAttribute("src");
    left.load(); right.load();
    message("No comparisons waiting right now; the trainer adds more as it learns. Checking again…");
    state.poll = setTimeout(next, 2000);
    return;
  }
  message("");
  if (!state.query || state.query.id !== query.id) {
    state.key = randomKey();
  }
  state.query = query;
  document.body.dataset.queryId = String(query.id);
  loadClips(query);
}

async function answer(choice) {
  if (state.busy || !state.query) return;
  state.busy = true;
  setButtons(false);
  const body = {
    query_id: state.query.id, choice, labeler: state.name, idempotency_key: state.key,
    watch_seconds: Math.max(0, (performance.now() - state.shownAt) / 1000),
  };
  try {
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await api("/api/labels", body);
      } catch (e) {  // network trouble: the same key makes the retry safe
        if (attempt >= 4) { message("Cannot reach the server; your answer was not sent."); setButtons(true); return; }
        await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
        continue;
      }
      if (res.status === 401) return showLogin("The server needs a token.");
      if (res.status === 200) {
        showProgress(res.data.progress);
        message("");
      } else {
        message(`Not stored: ${res.data ? res.data.detail : res.status}. Here is the next pair.`);
      }
      state.query = null;
      await next();
      return;
    }
  } finally {
    state.busy = false;
  }
}

document.querySelectorAll(".buttons button").forEach((b) => {
  b.addEventListener("click", () => answer(b.dataset.choice));
});
$("replay").addEventListener("click", playBoth);

document.addEventListener("keydown", (ev) => {
  if ($("labeler").hidden || ev.target instanceof HTMLInputElement) return;
  if (ev.key === "r" || ev.key === "R") { playBoth(); return; }
  const choice = KEYS[ev.key];
  if (!choice) return;
  ev.preventDefault();
  answer(choice);
});

async function showLogin(error) {
  $("labeler").hidden = true;
  const auth = await api("/api/auth");
  $("token-row").hidden = !(auth.data && auth.data.token_required && !auth.data.authorized);
  $("login-error").textContent = error || "";
  // Never overwrite what someone already typed (the form may be on screen from before).
  if (!$("name").value) $("name").value = localStorage.getItem("rlkit_labeler") || "";
  $("login").hidden = false;  // shown only once it is final, so typing cannot be lost
}

async function start() {
  $("login").hidden = true;
  $("labeler").hidden = false;
  $("who").textContent = `labeling as ${state.name}`;
  await next();
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim().replace(/\s+/g, " ");
  if (!/^[\w.@-]+( [\w.@-]+)*$/u.test(name)) {
    $("login-error").textContent = "Use letters, digits, spaces and . @ - _ in your name.";
    return;
  }
  if (!$("token-row").hidden) setCookieToken($("token").value.trim());
  const auth = await api("/api/auth");
  if (auth.data && auth.data.token_required && !auth.data.authorized) {
    $("login-error").textContent = "That token is not right.";
    return;
  }
  localStorage.setItem("rlkit_labeler", name);
  state.name = name;
  start();
});

(async function init() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    setCookieToken(params.get("token"));
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
  }
  if (params.has("labeler")) localStorage.setItem("rlkit_labeler", params.get("labeler"));
  const auth = await api("/api/auth");
  const saved = localStorage.getItem("rlkit_labeler");
  if (saved && auth.data && (!auth.data.token_required || auth.data.authorized)) {
    state.name = saved;
    start();
  } else {
    showLogin("");
  }
})();
