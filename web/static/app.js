// Keeps the dashboard live: subscribes over /ws from the newest event shown,
// prepends what arrives, and on a lost connection reconnects and resumes from
// the last event id it saw (the server replays what was missed).
"use strict";

(function () {
  const list = document.getElementById("events");
  const status = document.getElementById("live-status");
  const empty = document.getElementById("empty");
  if (!list) return;
  let cursor = parseInt(list.dataset.cursor || "0", 10) || 0;
  const query = list.dataset.query || "";
  const sourceNames = JSON.parse(list.dataset.sources || "{}");
  let retry = 0;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 45) return "just now";
    if (s >= 86400) return Math.floor(s / 86400) + "d ago";
    if (s >= 3600) return Math.floor(s / 3600) + "h ago";
    if (s >= 60) return Math.floor(s / 60) + "m ago";
    return s + "s ago";
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;  // text only: never innerHTML
    return node;
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (_) { return null; }
  }

  function render(e) {
    const li = el("li", "event fresh");
    li.dataset.id = e.id;
    const meta = el("div", "meta");
    const src = el("span", "source", sourceNames[e.source_id] || e.source_id);
    src.title = e.source_id;
    meta.append(src);
    if (e.actor && e.actor.name) meta.append(el("span", "actor", e.actor.name));
    const time = el("time", null, ago(e.published));
    time.setAttribute("datetime", e.published);
    meta.append(time);
    if (e.verb !== "Create") meta.append(el("span", "verb", e.verb.toLowerCase() + "d"));
    const h = el("h2", "title");
    const href = e.url && safeUrl(e.url);
    if (href) {
      const a = el("a", null, e.title || "(untitled)");
      a.href = href;
      a.rel = "noopener noreferrer";
      h.append(a);
    } else {
      h.textContent = e.title || "(untitled)";
    }
    li.append(meta, h);
    if (e.summary) li.append(el("p", "summary", e.summary));
    return li;
  }

  function add(e) {
    if (list.querySelector('[data-id="' + e.id + '"]')) return;
    list.prepend(render(e));
    if (empty) empty.hidden = true;
    cursor = Math.max(cursor, e.id);
    list.dataset.cursor = String(cursor);
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws");
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "subscribe", stream: "main", query: query, cursor: cursor }));
    };
    ws.onmessage = function (msg) {
      const m = JSON.parse(msg.data);
      if (m.type === "subscribed") { retry = 0; setStatus("live", "live"); }
      else if (m.type === "event") add(m.event);
      else if (m.type === "error") setStatus("offline", m.message);
    };
    ws.onclose = function (ev) {
      setStatus("offline", "reconnecting…");
      // Signed out (1008), or a refused handshake: a signed-out page goes to sign in.
      if (ev.code === 1008 || ev.code === 1006) {
        fetch("/api/events?limit=1", { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
        }, function () {});
      }
      const delay = Math.min(30000, 500 * Math.pow(2, retry++)) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  setInterval(function () {
    for (const t of list.querySelectorAll("time[datetime]")) t.textContent = ago(t.getAttribute("datetime"));
  }, 30000);

  if (list.dataset.live === "on") connect();
  else setStatus("offline", "not live");
})();
