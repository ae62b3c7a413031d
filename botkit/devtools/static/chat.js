// botkit dev chat: talk to the bot as any number, watch what the framework does.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  const app = {
    info: null,
    user: null, // the selected number, digits only
    entries: [], // every feed entry received, oldest first
    lastId: 0,
    chats: new Map(), // user -> {preview, at}
    outbound: new Map(), // provider messageId -> {entry, statuses: []}
    delivered: new Map(), // ref of a user entry -> its "delivered" entry
    stateOf: new Map(), // user -> stored state after the last turn seen
  };

  // -- small helpers --------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function clockTime(seconds) {
    const d = new Date(seconds * 1000);
    return pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function dateTime(seconds) {
    const d = new Date(seconds * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clockTime(seconds);
  }

  function duration(seconds) {
    const minutes = Math.floor(Math.abs(seconds) / 60);
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return h ? h + "h " + pad(m) + "m" : m + "m";
  }

  function digits(raw) {
    return String(raw || "").replace(/[\s+()\-.]/g, "");
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  async function api(method, path, body) {
    const response = await fetch("/_dev/api/" + path, {
      method: method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = { error: "the server answered " + response.status };
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function stateWords(before, after) {
    const split = (s) => (s ? [s.slice(0, s.indexOf(":")), s.slice(s.indexOf(":") + 1)] : [null, null]);
    const [oldFlow, oldState] = split(before);
    const [newFlow, newState] = split(after);
    if (oldFlow === newFlow) return "flow " + newFlow + ": " + oldState + " → " + newState;
    const parts = [];
    if (oldFlow) parts.push("left flow " + oldFlow + " (was at " + oldState + ")");
    if (newFlow) parts.push("entered flow " + newFlow + " at " + newState);
    return parts.join("; ");
  }

  // -- what an entry looks like in the chat -------------------------------------------

  function mediaLabel(type) {
    const t = String(type || "").toLowerCase();
    if (t === "application/pdf") return "PDF";
    if (t.startsWith("image/")) return "IMG";
    if (t.startsWith("video/")) return "VID";
    if (t.startsWith("audio/")) return "AUD";
    return "FILE";
  }

  function initials(name) {
    return String(name).split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
  }

  function userContent(payload) {
    const parts = [];
    if (payload.contentUrl) {
      const name = payload.contentName || payload.contentUrl;
      parts.push(el("div", { class: "media" }, el("span", { class: "ico", text: mediaLabel(payload.contentType) }),
        el("div", {}, el("b", { text: payload.contentType || "file" }), name)));
    }
    const geo = payload.whatsAppGeoLocation;
    if (geo) {
      const label = geo.addressName || geo.address || "Location";
      parts.push(el("div", { class: "place" }, el("span", { class: "ico pin", text: "MAP" }),
        el("div", {}, el("b", { text: label }), geo.latitude + ", " + geo.longitude)));
    }
    for (const card of payload.whatsAppContacts || []) {
      const name = ((card.contactName || [])[0] || {}).formattedName || "Contact";
      const phone = ((card.phones || [])[0] || {}).phone || "";
      parts.push(el("div", { class: "card-contact" }, el("span", { class: "ico round", text: initials(name) }),
        el("div", {}, el("b", { text: name }), phone)));
    }
    if (payload.text) parts.push(el("span", { class: "body", text: payload.text }));
    return parts;
  }

  function botContent(message) {
    const parts = [];
    if (message.templateId) {
      const params = message.templateParams || {};
      const shown = Object.keys(params).map((k) => k + ": " + params[k]).join(", ");
      parts.push(el("div", { class: "tag", text: "Template" }));
      parts.push(el("span", { class: "body", text: message.templateId + (shown ? " · " + shown : "") }));
      return parts;
    }
    if (message.contentUrl) {
      parts.push(el("div", { class: "media" }, el("span", { class: "ico", text: mediaLabel(message.contentType) }),
        el("div", {}, el("b", { text: message.contentType || "file" }), message.contentName || message.contentUrl)));
    }
    if (message.text) parts.push(el("span", { class: "body", text: message.text }));
    return parts;
  }

  const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };

  function outboundStatus(messageId) {
    const record = app.outbound.get(messageId);
    const last = record && record.statuses[record.statuses.length - 1];
    return last ? String(last.status).toLowerCase() : "accepted";
  }

  function renderTicks(node, messageId) {
    const status = outboundStatus(messageId);
    const record = app.outbound.get(messageId);
    const last = record.statuses[record.statuses.length - 1];
    node.dataset.status = status;
    node.textContent = TICKS[status] || "…";
    node.title = status + (last && last.errorCode ? " (error " + last.errorCode + ")" : "");
  }

  function messageBubble(entry) {
    const message = entry.message || {};
    const isTemplate = Boolean(message.templateId);
    const ticks = el("span", { class: "ticks" });
    const json = el("pre", { class: "json", hidden: true, text: pretty(message) });
    const toggle = el("button", { type: "button", class: "json-toggle", title: "the JSON the provider received", text: "{ }" });
    toggle.addEventListener("click", (event) => {
      event.stopPropagation();
      json.hidden = !json.hidden;
    });
    const bubble = el("div", {
      class: "msg theirs" + (isTemplate ? " template" : ""),
      "data-message-id": entry.messageId,
      "data-kind": isTemplate ? "template" : message.contentUrl ? "media" : "text",
    }, ...botContent(message), el("span", { class: "meta" }, toggle, " " + clockTime(entry.at), ticks), json);
    bubble.addEventListener("click", () => highlightLog(entry.messageId));
    renderTicks(ticks, entry.messageId);
    if (outboundStatus(entry.messageId) === "failed") bubble.classList.add("failed");
    return bubble;
  }

  function userBubble(entry) {
    const done = app.delivered.get(entry.id);
    const mark = el("span", { class: "ticks" });
    setDelivered(mark, done, entry);
    return el("div", { class: "msg mine", "data-ref": entry.id },
      ...userContent(entry.payload || {}), el("span", { class: "meta" }, clockTime(entry.at), mark));
  }

  function setDelivered(mark, done, entry) {
    if (!done && entry.webhookStatus === undefined) {
      mark.textContent = "…";
      mark.title = "on its way to the webhook";
      return;
    }
    const status = done ? done.webhookStatus : entry.webhookStatus;
    mark.textContent = status === 200 ? "✓" : "!";
    mark.dataset.status = status === 200 ? "delivered" : "failed";
    mark.title = status === 200 ? "the webhook took it (200)" : "the webhook answered " + status;
  }

  function note(text, kind) {
    return el("div", { class: "note" + (kind ? " " + kind : ""), text: text });
  }

  // Returns the nodes an entry adds to the open conversation (none for most kinds).
  function renderEntry(entry) {
    switch (entry.kind) {
      case "user":
        return [userBubble(entry)];
      case "message":
        return [messageBubble(entry)];
      case "delivered": {
        const bubble = document.querySelector('.msg.mine[data-ref="' + entry.ref + '"] .ticks');
        if (bubble) setDelivered(bubble, entry, entry);
        if (entry.webhookStatus !== 200) {
          const why = entry.webhookError || "the webhook answered " + entry.webhookStatus;
          return [note("Not delivered to the bot: " + why, "error")];
        }
        return [];
      }
      case "turn": {
        if (entry.event === "status") return [];
        const nodes = [];
        if (entry._before !== entry.state) nodes.push(note(stateWords(entry._before, entry.state), "state"));
        if (entry.outcome === "unhandled") nodes.push(note("No handler took this " + entry.event + " message"));
        if (entry.error) {
          const where = entry.handler ? "Handler " + entry.handler : "The turn";
          const tail = entry.errorHandled ? " (an error handler took it)" : " (nothing was saved)";
          nodes.push(note(where + " raised " + entry.error + tail, "error"));
        }
        return nodes;
      }
      case "clock":
        return [note("Dev clock moved " + entry.hours + " h forward, to " + dateTime(entry.now), "clock")];
      case "refused":
        return [note("Not sent: " + entry.message, "error")];
      default:
        return [];
    }
  }

  // -- the provider log (side panel) -----------------------------------------------------

  function logItem(entry) {
    const record = app.outbound.get(entry.messageId);
    const message = entry.message || {};
    const head = el("div", { class: "head" },
      el("b", { text: "#" + entry.messageId }),
      el("span", { class: "muted", text: clockTime(entry.at) }),
      el("span", { class: "chip" + (message.templateId ? " template" : ""), text: message.templateId ? "template" : message.contentUrl ? "media" : "text" }));
    for (const s of record.statuses) {
      const name = String(s.status).toLowerCase();
      head.append(el("span", {
        class: "chip status-" + name,
        text: name + (s.errorCode ? " " + s.errorCode : ""),
        title: dateTime(s.ts),
      }));
    }
    return el("li", { "data-message-id": entry.messageId }, head, el("pre", { class: "json", text: pretty(message) }));
  }

  function renderLog() {
    const list = $("provider-log");
    list.replaceChildren();
    const mine = app.entries.filter((e) => e.kind === "message" && e.user === app.user);
    for (const entry of mine.reverse()) list.append(logItem(entry));
    if (!mine.length) list.append(el("li", { class: "muted small", text: "Nothing sent to this number yet." }));
  }

  function highlightLog(messageId) {
    for (const item of document.querySelectorAll(".provider-log li")) {
      item.classList.toggle("highlight", item.dataset.messageId === messageId);
      if (item.dataset.messageId === messageId) item.scrollIntoView({ block: "nearest" });
    }
  }

  // -- the feed ------------------------------------------------------------------------

  function preview(entry) {
    if (entry.kind === "user") {
      const p = entry.payload || {};
      return "You: " + (p.text || (p.contentUrl ? "Media " + (p.contentType || "") : p.whatsAppGeoLocation ? "Location" : "Contact card"));
    }
    const m = entry.message || {};
    return m.templateId ? "Template " + m.templateId : m.text || (m.contentUrl ? "Media " + m.contentType : "");
  }

  function take(entry) {
    if (entry.kind === "hello") {
      if (entry.reset) resetAll();
      return;
    }
    if (entry.id <= app.lastId) return; // already seen (a resumed stream may overlap)
    app.lastId = entry.id;
    app.entries.push(entry);
    if (entry.kind === "turn") {
      entry._before = app.stateOf.has(entry.user) ? app.stateOf.get(entry.user) : null;
      app.stateOf.set(entry.user, entry.state);
    } else if (entry.kind === "message") {
      app.outbound.set(entry.messageId, { entry: entry, statuses: [] });
    } else if (entry.kind === "status") {
      const record = app.outbound.get(String(entry.messageId));
      if (record) record.statuses.push(entry);
    } else if (entry.kind === "delivered") {
      app.delivered.set(entry.ref, entry);
    }
    if ((entry.kind === "user" || entry.kind === "message") && entry.user) {
      app.chats.set(entry.user, { preview: preview(entry), at: entry.at });
      renderChats();
    }
    if (entry.kind === "status") {
      updateStatus(entry);
      return;
    }
    if (entry.user && entry.user !== app.user) return;
    if (entry.kind === "clock" || entry.kind === "turn" || entry.kind === "refused") schedulePanel();
    if (!app.user) return;
    const nodes = renderEntry(entry);
    if (nodes.length) {
      $("empty").hidden = true;
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      box.append(...nodes);
      if (atBottom || entry.kind === "user") box.scrollTop = box.scrollHeight;
    }
    if (entry.kind === "message") renderLog();
  }

  function updateStatus(entry) {
    const id = String(entry.messageId);
    if (entry.user !== app.user) return;
    for (const ticks of document.querySelectorAll('.msg[data-message-id="' + id + '"] .ticks')) renderTicks(ticks, id);
    if (outboundStatus(id) === "failed") {
      const bubble = document.querySelector('.msg[data-message-id="' + id + '"]');
      if (bubble) bubble.classList.add("failed");
    }
    renderLog();
  }

  function resetAll() {
    app.entries = [];
    app.lastId = 0;
    app.chats.clear();
    app.outbound.clear();
    app.delivered.clear();
    app.stateOf.clear();
    renderChats();
    if (app.user) openChat(app.user);
  }

  function connect() {
    const source = new EventSource("/_dev/api/events");
    const status = $("feed-state");
    source.onopen = () => {
      status.dataset.state = "live";
      status.textContent = "live: events from the emulator and the bot";
    };
    source.onerror = () => {
      status.dataset.state = "down";
      status.textContent = "reconnecting…";
    };
    source.onmessage = (event) => take(JSON.parse(event.data));
  }

  // -- chats ---------------------------------------------------------------------------

  function renderChats() {
    const list = $("chat-list");
    list.replaceChildren();
    const rows = Array.from(app.chats.entries()).sort((a, b) => b[1].at - a[1].at);
    if (app.user && !app.chats.has(app.user)) rows.unshift([app.user, { preview: "", at: 0 }]);
    for (const [user, chat] of rows) {
      const item = el("li", { class: user === app.user ? "active" : "", "data-user": user },
        el("div", { class: "avatar", "aria-hidden": "true" }),
        el("span", { class: "num", text: "+" + user }),
        el("span", { class: "time", text: chat.at ? clockTime(chat.at) : "" }),
        el("span", { class: "preview", text: chat.preview || "no messages yet" }));
      item.addEventListener("click", () => { location.hash = user; });
      list.append(item);
    }
  }

  function openChat(user) {
    app.user = user;
    $("who-number").textContent = "+" + user;
    $("who-state").textContent = "";
    $("text").disabled = false;
    $("send").disabled = false;
    const box = $("messages");
    box.replaceChildren($("empty"));
    $("empty").hidden = false;
    $("empty").textContent = "Say hi to " + (app.info ? app.info.bot : "the bot") + " as +" + user + ".";
    for (const entry of app.entries) {
      if (entry.user && entry.user !== user) continue;
      const nodes = renderEntry(entry);
      if (nodes.length && entry.kind !== "clock") $("empty").hidden = true;
      box.append(...nodes);
    }
    box.scrollTop = box.scrollHeight;
    renderChats();
    renderLog();
    refreshPanel();
    $("text").focus();
  }

  function fromHash() {
    const user = digits(decodeURIComponent(location.hash.slice(1)));
    if (/^[1-9]\d{6,14}$/.test(user) && user !== app.user) openChat(user);
  }

  // -- side panel ----------------------------------------------------------------------

  let panelTimer = null;
  function schedulePanel() {
    clearTimeout(panelTimer);
    panelTimer = setTimeout(refreshPanel, 30);
  }

  async function refreshPanel() {
    if (!app.user) return;
    const user = app.user;
    const result = await api("GET", "conversation/" + user);
    if (!result.ok || user !== app.user) return;
    const c = result.data;
    renderFlow(c);
    $("data").textContent = pretty(c.data || {});
    renderWindow(c);
    const ahead = c.clockOffset ? " (" + duration(c.clockOffset) + " ahead of real time)" : "";
    $("clock-now").textContent = "Dev clock: " + dateTime(c.now) + ahead;
  }

  function renderFlow(c) {
    const box = $("flow-box");
    box.replaceChildren();
    $("who-state").textContent = c.flow ? "flow " + c.flow + " · " + c.flowState : "in no flow";
    if (!c.flow) {
      box.append(el("span", { class: "muted", text: "In no flow" }));
      box.dataset.state = "";
      return;
    }
    box.dataset.state = c.state;
    const flow = app.info && app.info.flows[c.flow];
    box.append(el("div", {}, "Flow ", el("span", { class: "flow-name", text: c.flow }), ", state ",
      el("b", { class: "flow-state", text: c.flowState })));
    if (flow) {
      const states = el("div", { class: "states" });
      for (const name of flow.states) {
        const classes = [name === c.flowState ? "current" : "", flow.final.includes(name) ? "final" : ""].join(" ").trim();
        states.append(el("span", { class: classes, text: name }));
      }
      box.append(states);
    }
    const allowed = c.allowed.length ? c.allowed.join(", ") : "none";
    box.append(el("div", { class: "muted small", text: "Triggers from here: " + allowed }));
  }

  function renderWindow(c) {
    const box = $("window");
    box.replaceChildren();
    const w = c.window;
    if (w.closesAt === null) {
      box.dataset.open = "false";
      box.append(el("span", { class: "badge", text: "never opened" }), "the user has not written yet: templates only");
      return;
    }
    box.dataset.open = String(w.open);
    if (w.open) {
      box.append(el("span", { class: "badge", text: "open" }),
        "free text until " + dateTime(w.closesAt) + " (" + duration(w.closesAt - c.now) + " left)");
    } else {
      const fallback = app.info && app.info.defaultTemplate;
      box.append(el("span", { class: "badge", text: "closed" }),
        "since " + dateTime(w.closesAt) + ": replies go as " +
        (fallback ? "template " + fallback.id : "a template (the bot has no default_template)"));
    }
    if (c.lastInbound) box.append(el("div", { class: "muted small", text: "Last message from the user: " + dateTime(c.lastInbound) }));
    renderTimers(c);
  }

  function renderTimers(c) {
    const timers = c.timers || [];
    if (!timers.length) return;
    const list = el("ul", { class: "timers small" });
    for (const t of timers) {
      const left = t.due > c.now ? "in " + duration(t.due - c.now) : "due now";
      list.append(el("li", { class: "timer", text: t.name + " at " + dateTime(t.due) + " (" + left + ")" }));
    }
    $("window").append(el("div", { class: "muted small", text: "Pending timers (a clock jump fires them):" }), list);
  }

  // -- actions -------------------------------------------------------------------------

  async function sendAsUser(body) {
    if (!app.user) return false;
    const result = await api("POST", "send", Object.assign({ user: app.user }, body));
    if (!result.ok) {
      $("messages").append(note(result.data.error || "could not send", "error"));
      return false;
    }
    return true;
  }

  function wire() {
    $("new-chat").addEventListener("submit", (event) => {
      event.preventDefault();
      const user = digits($("number").value);
      if (!/^[1-9]\d{6,14}$/.test(user)) {
        $("number-error").textContent = "7 to 15 digits with the country code, e.g. 79031234567";
        return;
      }
      $("number-error").textContent = "";
      $("number").value = "";
      if (user === app.user) return;
      location.hash = user;
    });

    $("composer").addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("text").value;
      if (!text.trim()) return;
      $("text").value = "";
      await sendAsUser({ text: text });
    });

    for (const button of document.querySelectorAll("[data-attach]")) {
      button.addEventListener("click", () => {
        const target = button.dataset.attach;
        for (const other of document.querySelectorAll("[data-attach]")) {
          const form = $(other.dataset.attach);
          const show = other === button && form.hidden;
          form.hidden = !show;
          other.setAttribute("aria-pressed", String(show));
        }
        if (!$(target).hidden) $(target).querySelector("input").focus();
      });
    }

    const attach = (id, build) => {
      $(id).addEventListener("submit", async (event) => {
        event.preventDefault();
        const form = event.target;
        const values = Object.fromEntries(new FormData(form).entries());
        if (await sendAsUser(build(values))) {
          form.hidden = true;
          for (const b of document.querySelectorAll("[data-attach]")) b.setAttribute("aria-pressed", "false");
        }
      });
    };
    attach("media-form", (v) => ({ media: { url: v.url, type: v.type, caption: v.caption } }));
    attach("location-form", (v) => ({ location: { latitude: Number(v.latitude), longitude: Number(v.longitude), name: v.name, address: v.address } }));
    attach("contact-form", (v) => ({ contact: { name: v.name, phone: v.phone } }));

    const jump = async (hours) => {
      const result = await api("POST", "clock", { hours: hours });
      if (!result.ok) $("messages").append(note(result.data.error, "error"));
    };
    for (const button of document.querySelectorAll("[data-hours]")) {
      button.addEventListener("click", () => jump(Number(button.dataset.hours)));
    }
    $("clock-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const hours = Number($("clock-hours").value);
      if (hours > 0) jump(hours);
    });

    $("bot-send-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!app.user) return;
      const body = { user: app.user, text: $("bot-send-text").value };
      const id = $("bot-send-template").value.trim();
      if (id) {
        const params = $("bot-send-params").value.split(",").map((p) => p.trim()).filter(Boolean);
        body.template = { id: id, params: params };
      }
      const result = await api("POST", "bot-send", body);
      // A refusal (409) also arrives through the feed, as a note in the chat.
      if (!result.ok && result.status !== 409) $("messages").append(note(result.data.error, "error"));
      if (result.ok) $("bot-send-text").value = "";
    });

    window.addEventListener("hashchange", fromHash);
  }

  // -- campaigns: live totals, refreshed every two seconds ---------------------------

  function renderCampaigns(list) {
    $("campaigns-card").hidden = !list.length;
    const items = list.map((c) => {
      const done = c.audience - c.queued;
      const share = c.audience ? Math.round((100 * done) / c.audience) : 100;
      const bar = el("progress", { max: String(c.audience || 1), value: String(done) });
      const counts = (o) => Object.entries(o).map(([k, v]) => k + " " + v).join(", ") || "none";
      return el(
        "li",
        { class: "campaign", "data-state": c.state, "data-name": c.name },
        el("div", {}, el("strong", { text: c.name }), " ", el("span", { class: "muted", text: c.state + " · " + c.template.id })),
        el("div", {}, bar, " ", el("span", { class: "small", text: share + "% · " + done + " of " + c.audience })),
        el(
          "div",
          { class: "small" },
          "queued " + c.queued + " · sent " + c.sent + " · delivered " + c.delivered + " · read " + c.read
        ),
        el("div", { class: "small muted" }, "failed: " + counts(c.failed) + " · skipped: " + counts(c.skipped))
      );
    });
    $("campaigns").replaceChildren(...items);
  }

  async function refreshCampaigns() {
    const result = await api("GET", "campaigns");
    if (result.ok) renderCampaigns(result.data);
  }

  async function start() {
    wire();
    refreshCampaigns();
    setInterval(refreshCampaigns, 2000);
    const result = await api("GET", "info");
    if (result.ok) {
      app.info = result.data;
      $("bot-name").textContent = "bot: " + app.info.bot;
      document.title = app.info.bot + " · botkit dev chat";
      const t = app.info.defaultTemplate;
      $("default-template").textContent = t ? "default template: " + t.id : "no default template";
    }
    connect();
    fromHash();
  }

  start();
})();
