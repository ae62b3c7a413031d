// botkit agent inbox: the handed-off conversations, their transcripts, replies.
// Everything goes through the agent API on this server (the login cookie).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { user: null, detail: null, agent: "", refreshing: false, again: false };

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(path, options);
  if (answer.status === 401) {
    showLogin();
    throw new Error("logged out");
  }
  const data = await answer.json().catch(() => ({}));
  return { status: answer.status, data };
}

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !location.search.includes("error=1");
  $("login-name").value = cookie("botkit_agent_name");
}

function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function clock(at) {
  return new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// -- the list ----------------------------------------------------------------------

function renderList(data) {
  const list = $("handoffs");
  list.replaceChildren();
  const n = data.total;
  $("count").textContent = n === 0 ? "No conversation is waiting." : n === 1 ? "1 conversation" : n + " conversations";
  for (const item of data.handoffs) {
    const li = el("li");
    const button = el("button", "handoff" + (item.user === state.user ? " current" : ""));
    button.type = "button";
    button.dataset.user = item.user;
    const top = el("div", "top");
    top.append(el("span", "number", "+" + item.user));
    const badge = el("span", "badge " + item.status, item.status === "taken" ? "taken by " + item.agent : "waiting");
    top.append(badge);
    button.append(top);
    button.append(el("div", "waited", "waiting " + ago(item.waiting)));
    if (item.reason) button.append(el("div", "reason", item.reason));
    if (item.last_message) button.append(el("div", "last", "“" + (item.last_message.text || "(media)") + "”"));
    button.addEventListener("click", () => open(item.user));
    li.append(button);
    list.append(li);
  }
}

// -- one conversation --------------------------------------------------------------

const TICKS = { queued: "🕓", accepted: "✓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!", undelivered: "!" };

function describe(entry) {
  if (entry.kind === "flow") {
    if (entry.from === null) return "entered flow " + entry.flow + " at " + entry.to;
    if (entry.to === null) return "left flow " + entry.flow + " (" + (entry.reason || "") + ")";
    return "flow " + entry.flow + ": " + entry.from + " → " + entry.to;
  }
  if (entry.kind === "handoff") {
    const who = entry.agent ? " by " + entry.agent : "";
    const why = entry.reason ? ": " + entry.reason : "";
    return "handoff " + entry.event.replace("_", " ") + who + why;
  }
  return "";
}

function renderTranscript(entries) {
  const list = $("transcript");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  for (const entry of entries) {
    if (entry.kind === "status") continue; // shown as ticks on its message
    if (entry.kind === "in" || entry.kind === "out") {
      const agent = entry.kind === "out" && (entry.by || "").startsWith("agent:");
      const li = el("li", "msg " + entry.kind + (agent ? " agent" : ""));
      let text = entry.text;
      if (!text && entry.template) text = "[template " + entry.template.id + "]";
      if (!text && entry.media) text = "[" + entry.media.mime + "]";
      li.append(el("div", "text", text || "[" + (entry.type || entry.mode) + "]"));
      const meta = el("div", "meta");
      if (agent) meta.append(el("span", "by", entry.by.slice(6)));
      meta.append(el("span", "time", clock(entry.at)));
      if (entry.kind === "out") {
        const ticks = el("span", "ticks", TICKS[entry.status] || "✓");
        ticks.dataset.status = entry.status;
        ticks.title = entry.status;
        meta.append(ticks);
      }
      li.append(meta);
      list.append(li);
    } else {
      list.append(el("li", "note " + entry.kind, describe(entry)));
    }
  }
  if (atBottom || !state.rendered) list.scrollTop = list.scrollHeight;
  state.rendered = true;
}

function renderDetail(data) {
  state.detail = data;
  $("empty").hidden = true;
  $("conversation").hidden = false;
  $("who-number").textContent = "+" + data.user;
  const handoff = data.handoff;
  let status = "with the bot";
  if (handoff) {
    status = handoff.status === "taken" ? "taken by " + handoff.agent : "waiting " + ago(handoff.waiting);
    if (handoff.reason) status += " · " + handoff.reason;
  }
  if (data.opted_out) status += " · opted out";
  $("who-status").textContent = status;
  const mine = handoff && handoff.agent === state.agent;
  $("claim").hidden = !handoff || mine;
  $("claim").disabled = !!(handoff && handoff.agent);
  $("release").hidden = !handoff;
  $("reply-form").hidden = !handoff;
  const win = $("window");
  win.dataset.open = String(data.window.open);
  if (!handoff) {
    win.textContent = "The bot is answering this user.";
  } else if (data.window.open) {
    win.textContent = "Window open: free text until " + clock(data.window.closes_at) +
      " (closes in " + ago(data.window.closes_at - data.now) + ")";
  } else {
    win.textContent = "Window closed: only a template can reach the user now.";
  }
  $("template-form").hidden = !handoff || data.window.open;
  $("reply-text").disabled = !data.window.open;
  $("reply-send").disabled = !data.window.open;
  renderTranscript(data.entries);
}

async function open(user) {
  if (state.user !== user) state.rendered = false;
  state.user = user;
  $("app").classList.add("reading");
  $("problem").hidden = true;
  await refresh();
}

function problem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

async function act(action, body) {
  problem("");
  const answer = await api("POST", "/api/conversations/" + state.user + "/" + action, { agent: state.agent, ...body });
  if (answer.status >= 400) {
    problem(answer.data.message || "HTTP " + answer.status);
    if (answer.data.error === "outside_session_window") $("template-form").hidden = false;
  }
  await refresh();
  return answer;
}

// -- refreshing ---------------------------------------------------------------------

async function refresh() {
  if (state.refreshing) {
    state.again = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.again = false;
      const list = await api("GET", "/api/handoffs");
      renderList(list.data);
      if (state.user) {
        const detail = await api("GET", "/api/conversations/" + state.user + "?limit=200");
        if (detail.status === 200) renderDetail(detail.data);
      }
    } while (state.again);
  } catch (error) {
    if (error.message !== "logged out") console.warn(error);
  } finally {
    state.refreshing = false;
  }
}

function listen() {
  const live = $("live");
  const source = new EventSource("/api/agent/events");
  source.onopen = () => {
    live.dataset.state = "live";
    live.textContent = "live";
    refresh(); // what happened while the stream was closed
  };
  source.onerror = () => {
    live.dataset.state = "reconnecting";
    live.textContent = "reconnecting";
  };
  for (const name of ["handoff.started", "handoff.claimed", "message.received", "message.sent", "handoff.ended"]) {
    source.addEventListener(name, () => refresh());
  }
}

async function start() {
  state.agent = cookie("botkit_agent_name") || "agent";
  const first = await api("GET", "/api/handoffs").catch(() => null);
  if (!first) return;
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = state.agent;
  renderList(first.data);
  listen();
  setInterval(refresh, 5000); // other workers' turns, status ticks
  $("claim").addEventListener("click", () => act("claim", {}));
  $("release").addEventListener("click", () => act("release", {}));
  $("back").addEventListener("click", () => {
    state.user = null;
    $("app").classList.remove("reading");
    refresh();
  });
  $("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("reply-text").value.trim();
    if (!text) return;
    const answer = await act("reply", { text });
    if (answer.status === 202) $("reply-text").value = "";
  });
  $("reply-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("reply-form").requestSubmit();
    }
  });
  $("template-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = $("template-params").value.split(",").map((p) => p.trim()).filter((p) => p);
    const answer = await act("reply", { template: { id: $("template-id").value.trim(), params } });
    if (answer.status === 202) $("template-params").value = "";
  });
}

start();
