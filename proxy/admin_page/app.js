// The sluice status page. Everything it shows comes from /api/live, a WebSocket on which sluice
// pushes the /api/status document every second; rates are the difference between two documents.
// The admin token (for drain, undrain and reload) stays in this tab's sessionStorage and goes out
// in an Authorization header only; on the live feed, where a browser cannot set that header, it
// is offered as the subprotocol "bearer.TOKEN". It never appears in a URL.
"use strict";

const TOKEN_KEY = "sluice-admin-token";
let previous = null;  // the last document, for rates
let updates = 0;
let socket = null;
let retryTimer = null;

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") {
      e.className = v;
    } else if (k.startsWith("data-")) {
      e.setAttribute(k, v);
    } else {
      e[k] = v;
    }
  }
  for (const c of children) {
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function num(v) {
  return el("td", {class: "num"}, v);
}

function rate(now, before, seconds) {
  if (before === undefined || seconds <= 0) {
    return "–";
  }
  return (Math.max(0, now - before) / seconds).toFixed(1);
}

function say(text, ok) {
  const m = $("message");
  m.textContent = text;
  m.className = ok ? "ok" : "error";
}

function showTokenState() {
  const s = $("token-state");
  if (token()) {
    s.textContent = "token set for this tab";
    s.className = "";
  } else {
    s.textContent = "no token: sluice refuses drain, undrain and reload if it has one";
    s.className = "error";
  }
}

// ---- the admin API -----------------------------------------------------------------------

async function post(path, what) {
  const headers = {};
  if (token()) {
    headers["Authorization"] = "Bearer " + token();
  }
  let r;
  try {
    r = await fetch(path, {method: "POST", headers, cache: "no-store"});
  } catch (e) {
    say(what + ": sluice did not answer (" + e + ")", false);
    return;
  }
  let body = {};
  try {
    body = await r.json();
  } catch (e) {
    // a text answer (403 for the Host, 405): shown by status below
  }
  if (r.status === 401) {
    say(what + " refused: the admin API needs the admin token" +
        (token() ? " (the one set is wrong)" : " (set it above)"), false);
  } else if (!r.ok) {
    say(what + " failed: HTTP " + r.status + " " + (body.error || (body.errors || []).join("; ")),
        false);
  } else {
    say(what + ": " + (body.state || body.result || "ok") +
        (body.generation !== undefined ? " (generation " + body.generation + ")" : ""), true);
  }
}

function backendAction(pool, address, action) {
  // The API matches names as they are (no percent-decoding): keep the address's ':' (and an
  // IPv6 address's brackets) as they are.
  const keep = (s) => encodeURIComponent(s).replace(/%3A/gi, ":").replace(/%5B/gi, "[")
      .replace(/%5D/gi, "]");
  const path = "/api/pools/" + keep(pool) + "/backends/" + keep(address) + "/" + action;
  return post(path, action + " " + address);
}

// ---- rendering ---------------------------------------------------------------------------

function card(id, value, label) {
  return el("div", {class: "card"}, el("b", {id}, value), el("span", {}, label));
}

function render(doc) {
  const seconds = previous ? (doc.uptime_ms - previous.uptime_ms) / 1000 : 0;
  const before = {};
  for (const r of (previous && previous.routes) || []) {
    before[r.name] = r;
  }

  let connections = 0;
  for (const l of doc.listeners) {
    connections += l.connections;
  }
  let requests = 0, requestsBefore = 0, messages = 0, messagesBefore = 0, websockets = 0;
  for (const r of doc.routes) {
    const b = before[r.name];
    requests += r.requests || 0;
    websockets += r.websockets || 0;
    const m = r.messages || {};
    messages += (m.downstream_to_upstream || 0) + (m.upstream_to_downstream || 0);
    if (b) {
      requestsBefore += b.requests || 0;
      const bm = b.messages || {};
      messagesBefore += (bm.downstream_to_upstream || 0) + (bm.upstream_to_downstream || 0);
    }
  }

  $("summary").textContent = "version " + doc.version + " · pid " + doc.pid + " · up " +
      doc.uptime_seconds + " s · config generation " + doc.config.generation + " (" +
      doc.config.path + ")" + (doc.shutting_down ? " · SHUTTING DOWN" : "");

  $("totals").replaceChildren(
      card("total-connections", connections, "connections"),
      card("total-websockets", websockets, "WebSockets open"),
      card("total-requests", requests, "requests"),
      card("total-rps", previous ? rate(requests, requestsBefore, seconds) : "–", "requests/s"),
      card("total-mps", previous ? rate(messages, messagesBefore, seconds) : "–", "messages/s"),
      card("total-updates", updates, "updates received"));

  const pools = [];
  for (const p of doc.pools) {
    const rows = p.backends.map((b) => {
      const drain = el("button", {type: "button", class: "drain"}, "drain");
      drain.addEventListener("click", () => backendAction(p.name, b.address, "drain"));
      const undrain = el("button", {type: "button", class: "undrain"}, "undrain");
      undrain.addEventListener("click", () => backendAction(p.name, b.address, "undrain"));
      return el("tr", {"data-backend": p.name + "|" + b.address},
                el("td", {}, b.address), num(b.weight),
                el("td", {class: "state state-" + b.state}, b.state), num(b.connections),
                num(b.websockets), el("td", {}, drain, " ", undrain));
    });
    pools.push(el("div", {class: "pool"},
                  el("h3", {}, "pool " + p.name + " · " + p.balance),
                  el("table", {},
                     el("thead", {}, el("tr", {}, ...["backend", "weight", "state", "connections",
                                                      "WebSockets", ""].map(
                                                         (h) => el("th", {}, h)))),
                     el("tbody", {}, ...rows))));
  }
  $("pools").replaceChildren(...pools);

  $("routes").tBodies[0].replaceChildren(...doc.routes.map((r) => {
    const b = before[r.name] || {};
    const m = r.messages || {}, bm = b.messages || {};
    const closes = Object.entries(r.closes || {})
        .map(([code, n]) => (code === "0" ? "other" : code) + "×" + n).join(" ");
    return el("tr", {},
              el("td", {}, r.name), el("td", {}, r.listener),
              el("td", {}, (r.host || "*") + (r.path_prefix || "/")), el("td", {}, r.pool),
              num(r.requests || 0),
              num(previous ? rate(r.requests, b.requests, seconds) : "–"),
              num(r.websocket ? (r.websockets || 0) : "–"),
              num(previous ? rate(m.downstream_to_upstream, bm.downstream_to_upstream, seconds)
                           : "–"),
              num(previous ? rate(m.upstream_to_downstream, bm.upstream_to_downstream, seconds)
                           : "–"),
              el("td", {}, closes || "–"));
  }));

  $("listeners").tBodies[0].replaceChildren(...doc.listeners.map(
      (l) => el("tr", {}, el("td", {}, l.name), el("td", {}, l.listen), num(l.connections))));

  const reloads = (doc.reload_history || []).slice().reverse();
  $("reloads").tBodies[0].replaceChildren(...(reloads.length ? reloads.map(
      (h) => el("tr", {}, el("td", {}, h.time), el("td", {}, h.trigger),
                el("td", {class: h.result === "success" ? "state-healthy" : "state-unhealthy"},
                   h.result),
                num(h.generation), el("td", {class: "msg"}, h.errors.join("\n"))))
      : [el("tr", {}, el("td", {colSpan: 5}, "no reload since start (" +
                                                 doc.config.last_reload.time + ")"))]));

  const errors = (doc.last_errors || []).slice().reverse();
  $("errors").tBodies[0].replaceChildren(...(errors.length ? errors.map(
      (e) => el("tr", {}, el("td", {}, e.time), el("td", {class: "level-" + e.level}, e.level),
                el("td", {class: "msg"}, e.message)))
      : [el("tr", {}, el("td", {colSpan: 3}, "none"))]));

  previous = doc;
}

// ---- the live feed -----------------------------------------------------------------------

function connect() {
  clearTimeout(retryTimer);
  const protocols = ["sluice-live"];
  if (token()) {
    protocols.push("bearer." + token());
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/live";
  let opened = false;
  try {
    socket = new WebSocket(url, protocols);
  } catch (e) {
    // A token with characters a subprotocol cannot carry.
    $("live").textContent = "offline: " + e.message;
    return;
  }
  socket.onopen = () => {
    opened = true;
    $("live").textContent = "live";
    $("live").className = "badge on";
  };
  socket.onmessage = (ev) => {
    updates += 1;
    document.body.dataset.updates = updates;
    render(JSON.parse(ev.data));
  };
  socket.onclose = (ev) => {
    $("live").className = "badge off";
    $("live").textContent = opened ? "offline (closed " + ev.code + "), retrying"
                                   : "offline: refused (a read token may be needed), retrying";
    socket = null;
    retryTimer = setTimeout(connect, 2000);
  };
}

function reconnect() {
  if (socket) {
    socket.onclose = null;
    socket.close();
    socket = null;
  }
  connect();
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  }
  showTokenState();
  reconnect();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
  reconnect();
});
$("reload").addEventListener("click", () => post("/api/reload", "reload"));

showTokenState();
connect();
