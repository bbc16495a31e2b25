// The dashboard on top of the server-rendered page: queries load without a
// reload (the URL follows, back and forward work), older history loads as the
// reader scrolls, one websocket carries the current query live (resuming from
// the last id it saw) and each saved stream's unread badge, and j/k/o move and
// open. Saved streams are renamed, re-queried, reordered (Alt+↑/↓, buttons or
// dragging) and deleted in the sidebar. Text from events only ever goes in
// through textContent, and only http(s) links are made.
"use strict";

(function () {
  const list = document.getElementById("events");
  if (!list) return;
  const $ = (id) => document.getElementById(id);
  const header = document.querySelector("header.top");
  const status = $("live-status");
  const empty = $("empty");
  const input = $("q");
  const queryError = $("query-error");
  const loadError = $("load-error");
  const olderButton = $("older");
  const theEnd = $("the-end");
  const pill = $("new-pill");
  const nav = $("streams");
  const streamList = $("stream-list");
  const saveOpen = $("save-open");
  const saveForm = $("save-form");
  const saveName = $("save-name");
  const saveError = $("save-error");
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const sourceNames = JSON.parse(list.dataset.sources || "{}");
  const canSave = !!nav && nav.dataset.canSave === "yes";
  const PAGE = 50;
  const MAX_SAVED_LIVE = 31; // the server allows 32 streams per connection; one is the list's

  const state = {
    query: list.dataset.query || "",
    valid: list.dataset.live === "on", // the query parsed, so the list is live
    stream: null, // the saved stream on view (its id), or null
    older: toId(list.dataset.older), // cursor of the next older page; null: no more
    cursor: toId(list.dataset.cursor) || 0, // the list's resume point on the websocket
    known: toId(list.dataset.cursor) || 0, // the highest id this page knows is committed
    live: "q0", // the list's stream name on the websocket
    loads: 0, // query loads started: a late answer to an older one is dropped
    listGen: 0, // bumped whenever the list is replaced
    streams: [],
    allFeeds: null, // the personal feeds of everything
    confirming: null, // the stream whose delete awaits a second click
    confirmNote: null, // why that delete failed, said in its place
    managing: null, // the stream whose actions (edit, move, delete) are shown
    editing: null, // {id, li}: the stream being edited, and its form, kept across renders
    orderPending: 0, // new orders not yet saved
    unseen: 0, // live events that arrived above a reader who had scrolled down
  };
  let current = null; // the event j/k selected

  // --- small helpers ------------------------------------------------------------

  function toId(value) {
    const n = Number(value);
    return value !== null && value !== undefined && value !== "" && Number.isSafeInteger(n) ? n : null;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text; // text only: never innerHTML
    return node;
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, location.href);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 45) return "just now";
    if (s >= 86400) return Math.floor(s / 86400) + "d ago";
    if (s >= 3600) return Math.floor(s / 3600) + "h ago";
    if (s >= 60) return Math.floor(s / 60) + "m ago";
    return s + "s ago";
  }

  const PAST = { read: "read", undo: "undid", leave: "left" }; // as web/pages.py

  function verbLabel(verb) {
    const word = String(verb).toLowerCase();
    return PAST[word] || (word.endsWith("e") ? word + "d" : word + "ed");
  }

  // A stable hue per source id, set as a custom property: CSP allows styles
  // set through the CSSOM by a same-origin script, never style attributes.
  function hashHue(sourceId) {
    let h = 0x811c9dc5; // FNV-1a
    for (let i = 0; i < sourceId.length; i++) {
      h ^= sourceId.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h % 360;
  }

  // Each known source starts from its own hash and steps along the golden
  // angle away from hues that sources sorting before it took: a hue changes
  // only when a new source sorting earlier lands close to it.
  const hues = (function () {
    const taken = [];
    const out = {};
    const near = (a, b) => Math.min(Math.abs(a - b), 360 - Math.abs(a - b)) < 28;
    for (const id of Object.keys(sourceNames).sort()) {
      let h = hashHue(id);
      for (let i = 0; i < 12 && taken.some((t) => near(t, h)); i++) h = Math.round(h + 137.5) % 360;
      taken.push(h);
      out[id] = h;
    }
    return out;
  })();

  function hue(sourceId) {
    return Object.prototype.hasOwnProperty.call(hues, sourceId) ? hues[sourceId] : hashHue(sourceId);
  }

  function paint(li) {
    li.style.setProperty("--source-hue", String(hue(li.dataset.source || "")));
    const time = li.querySelector("time[datetime]");
    if (time) time.title = new Date(time.getAttribute("datetime")).toLocaleString();
  }

  function urlFor(query, stream) {
    const params = new URLSearchParams();
    if (query) params.set("q", query);
    if (stream !== null) params.set("stream", String(stream));
    const search = params.toString();
    return "/" + (search ? "?" + search : "");
  }

  function toSignIn() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  // keepalive: the request outlives the page (a save made just before a reload).
  async function api(method, url, body, keepalive) {
    const init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (keepalive) init.keepalive = true;
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    if (res.status === 401) {
      toSignIn();
      throw new Error("signed out");
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      // 204, or not JSON
    }
    return { status: res.status, ok: res.ok, data: data };
  }

  // Stream API calls run one after another, so a count fetched before a
  // "mark read" can never land after it.
  let chain = Promise.resolve();
  function serial(task) {
    const run = chain.then(task);
    chain = run.catch(function () {});
    return run;
  }

  function setStatus(name, text) {
    status.dataset.state = name;
    status.textContent = text;
  }

  // --- the list -------------------------------------------------------------------

  function render(e, fresh) {
    const li = el("li", fresh ? "event fresh" : "event");
    li.dataset.id = e.id;
    li.dataset.source = e.source_id;
    li.tabIndex = -1;
    const meta = el("div", "meta");
    const src = el("span", "source", sourceNames[e.source_id] || e.source_id);
    src.title = e.source_id;
    meta.append(src);
    if (e.actor && e.actor.name) meta.append(el("span", "actor", e.actor.name));
    if (e.verb && e.verb !== "Create") meta.append(el("span", "verb", verbLabel(e.verb)));
    const time = el("time", null, ago(e.published));
    time.setAttribute("datetime", e.published);
    meta.append(time);
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
    const files = attachmentList(e.attachments);
    if (files) li.append(files);
    paint(li);
    return li;
  }

  // Enclosures and media (a podcast's episode, a photo): one link per file,
  // named by the file, with its type and size when the feed gave them.
  function attachmentList(attachments) {
    const ul = el("ul", "attachments");
    for (const a of Array.isArray(attachments) ? attachments : []) {
      const href = a && typeof a.url === "string" && safeUrl(a.url);
      if (!href) continue;
      const li = el("li");
      const link = el("a", null, fileName(href));
      link.href = href;
      link.rel = "noopener noreferrer";
      li.append(link);
      const about = [typeof a.type === "string" ? a.type : "", humanSize(a.length)].filter(Boolean);
      if (about.length) li.append(el("span", "attachment-about", about.join(", ")));
      ul.append(li);
    }
    return ul.childElementCount ? ul : null;
  }

  // Format (Cf) and control (Cc) characters: a decoded name could carry a bidi
  // override ("invoice" U+202E "gpj.exe" reads as "invoiceexe.jpg") or another
  // invisible mark that spoofs it. aggregator/humanize.file_name drops the same.
  const INVISIBLE = /[\p{Cc}\p{Cf}]/gu;

  function fileName(href) {
    const u = new URL(href);
    const last = u.pathname.split("/").filter(Boolean).pop();
    let name = last || "";
    try {
      name = decodeURIComponent(name);
    } catch (_) {
      // not percent-encoded UTF-8: shown as it is
    }
    return name.replace(INVISIBLE, "") || u.host;
  }

  function humanSize(bytes) {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) return "";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let size = bytes;
    let unit = 0;
    while (size >= 1000 && unit < units.length - 1) {
      size /= 1000;
      unit += 1;
    }
    return (unit && size < 10 ? size.toFixed(1) : String(Math.round(size))) + " " + units[unit];
  }

  function items() {
    return Array.from(list.children);
  }

  function has(id) {
    return list.querySelector('li[data-id="' + id + '"]') !== null;
  }

  function note(id) {
    state.known = Math.max(state.known, id);
  }

  function headerBottom() {
    return header ? header.getBoundingClientRect().bottom : 0;
  }

  // The reader has scrolled the top of the list out of sight.
  function scrolledAway() {
    return list.getBoundingClientRect().top < headerBottom() - 8;
  }

  function firstVisible() {
    const top = headerBottom();
    return items().find((li) => li.getBoundingClientRect().bottom > top) || null;
  }

  // A live event, in id order (newest first), without moving what a reader
  // who scrolled down is looking at: they get a "N new" pill instead.
  function addLive(e) {
    if (!Number.isSafeInteger(e.id)) return;
    note(e.id);
    state.cursor = Math.max(state.cursor, e.id);
    list.dataset.cursor = String(state.cursor);
    if (has(e.id)) return;
    const away = scrolledAway();
    const anchor = away ? firstVisible() : null;
    const before = anchor ? anchor.getBoundingClientRect().top : 0;
    const next = items().find((li) => Number(li.dataset.id) < e.id) || null;
    list.insertBefore(render(e, true), next);
    if (anchor) window.scrollBy(0, anchor.getBoundingClientRect().top - before);
    if (away) {
      state.unseen += 1;
      pill.textContent = "↑ " + state.unseen + " new";
      pill.hidden = false;
    }
    updateStates();
    if (state.stream !== null) scheduleMarkRead();
  }

  function clearPill() {
    state.unseen = 0;
    pill.hidden = true;
  }

  pill.addEventListener("click", function () {
    clearPill();
    window.scrollTo(0, 0);
    const first = list.firstElementChild;
    if (first) select(first, false);
  });

  window.addEventListener(
    "scroll",
    function () {
      if (state.unseen && !scrolledAway()) clearPill();
    },
    { passive: true },
  );

  function setEmptyText() {
    if (state.query) {
      empty.replaceChildren("Nothing matches ", el("code", null, state.query), " yet — new events appear as they happen.");
    } else {
      empty.replaceChildren("Nothing here yet — new events appear as they happen.");
    }
  }

  function updateStates() {
    const count = list.children.length;
    empty.hidden = count > 0 || !state.valid;
    olderButton.hidden = state.older === null;
    theEnd.hidden = state.older !== null || count === 0;
    if (saveOpen) {
      const offer = canSave && state.valid && state.query.trim() && state.stream === null;
      saveOpen.hidden = !offer || !saveForm.hidden;
    }
  }

  function showLoadError(message, retry) {
    loadError.hidden = false;
    $("load-error-message").textContent = message;
    $("retry").onclick = function () {
      hideLoadError();
      retry();
    };
  }

  function hideLoadError() {
    loadError.hidden = true;
  }

  // --- the query box ----------------------------------------------------------------

  // The server's words, where it went wrong (also said in words: a mark is
  // not read out by every screen reader), and the query with the spot marked.
  // (The stream editor shows a saved query's error the same way.)
  function queryErrorParts(message, position, query) {
    const where = Number.isInteger(position) ? " (at character " + (position + 1) + ")" : "";
    const parts = [el("span", "message", message.endsWith(where) ? message : message + where)];
    if (Number.isInteger(position)) {
      const at = Math.max(0, Math.min(position, query.length));
      const echo = el("code", "query-echo");
      echo.append(query.slice(0, at), el("mark", null, query.slice(at, at + 1) || " "), query.slice(at + 1));
      parts.push(echo);
    }
    return parts;
  }

  function showQueryError(message, position, query) {
    const parts = queryErrorParts(message, position, query);
    if (Number.isInteger(position) && document.activeElement === input && input.value === query) {
      const at = Math.max(0, Math.min(position, query.length));
      input.setSelectionRange(at, at);
    }
    queryError.replaceChildren(...parts);
    queryError.hidden = false;
    input.setAttribute("aria-invalid", "true");
  }

  function clearQueryError() {
    queryError.hidden = true;
    queryError.replaceChildren();
    input.removeAttribute("aria-invalid");
  }

  function setBusy(busy) {
    list.setAttribute("aria-busy", busy ? "true" : "false");
    list.classList.toggle("loading", busy);
  }

  // Loads a query's newest page. A bad query keeps the list and says why,
  // under the box; a failed load offers a retry.
  async function load(query, opts) {
    const ticket = ++state.loads;
    const known = state.known; // committed before this read: a safe resume point
    setBusy(true);
    let res;
    try {
      res = await api("GET", "/api/events?" + new URLSearchParams({ q: query, limit: String(PAGE) }));
    } catch (_) {
      if (ticket !== state.loads) return;
      setBusy(false);
      showLoadError("Could not load events: the server did not answer.", () => load(query, opts));
      return;
    }
    if (ticket !== state.loads) return;
    setBusy(false);
    const data = res.data || {};
    if (res.status === 400 && typeof data.error === "string") {
      showQueryError(data.error, data.position, query);
      return;
    }
    if (!res.ok || !Array.isArray(data.events)) {
      showLoadError("Could not load events (HTTP " + res.status + ").", () => load(query, opts));
      return;
    }
    clearQueryError();
    hideLoadError();
    closeSaveForm();
    const fix = $("fix-query");
    if (fix) fix.remove();
    const stream = findStream(opts.stream) ? opts.stream : null; // not one deleted since
    const url = urlFor(query, stream);
    if (opts.push && url !== location.pathname + location.search) history.pushState(null, "", url);
    else if (opts.push || opts.replace) history.replaceState(null, "", url);
    if (input.value !== query) input.value = query;
    state.query = query;
    state.valid = true;
    state.stream = stream;
    state.listGen += 1;
    list.dataset.query = query;
    const events = data.events.filter((e) => Number.isSafeInteger(e.id));
    list.replaceChildren(...events.map((e) => render(e, false)));
    events.forEach((e) => note(e.id));
    state.older = toId(data.next_cursor);
    // What this read saw is in the list; the websocket replays what comes after.
    state.cursor = Math.max(events.length ? events[0].id : 0, known);
    list.dataset.cursor = String(state.cursor);
    current = null;
    clearPill();
    setEmptyText();
    updateStates();
    renderStreams();
    window.scrollTo(0, 0);
    subscribeList();
    if (state.stream !== null) scheduleMarkRead(0);
    fillViewport();
  }

  $("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    const query = input.value;
    const saved = findStream(state.stream);
    load(query, { push: true, stream: saved && saved.query === query ? saved.id : null });
  });

  window.addEventListener("popstate", function () {
    const params = new URLSearchParams(location.search);
    load(params.get("q") || "", { push: false, stream: toId(params.get("stream")) });
  });

  // --- history: older pages -------------------------------------------------------

  let olderLoading = false;

  async function loadOlder() {
    if (state.older === null || olderLoading || !state.valid) return;
    olderLoading = true;
    const gen = state.listGen;
    olderButton.disabled = true;
    olderButton.textContent = "Loading…";
    let loaded = false;
    try {
      const params = new URLSearchParams({ q: state.query, cursor: String(state.older), limit: String(PAGE) });
      const res = await api("GET", "/api/events?" + params);
      if (gen !== state.listGen) return;
      const data = res.data || {};
      if (!res.ok || !Array.isArray(data.events)) {
        showLoadError("Could not load older events (HTTP " + res.status + ").", loadOlder);
        return;
      }
      hideLoadError();
      for (const e of data.events) {
        if (Number.isSafeInteger(e.id) && !has(e.id)) list.append(render(e, false));
      }
      state.older = toId(data.next_cursor);
      updateStates();
      loaded = true;
    } catch (_) {
      if (gen === state.listGen) showLoadError("Could not load older events: the server did not answer.", loadOlder);
    } finally {
      olderLoading = false;
      olderButton.disabled = false;
      olderButton.textContent = "Older events";
    }
    if (loaded || gen !== state.listGen) fillViewport();
  }

  // The observer fires on changes only: a page too short to scroll asks again.
  function fillViewport() {
    if (state.older !== null && olderButton.getBoundingClientRect().top < window.innerHeight + 400) loadOlder();
  }

  olderButton.addEventListener("click", loadOlder);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(
      function (entries) {
        if (entries.some((entry) => entry.isIntersecting)) loadOlder();
      },
      { rootMargin: "0px 0px 400px 0px" },
    ).observe($("history"));
  }

  // --- live -------------------------------------------------------------------------

  let ws = null;
  let retry = 0;
  let opened = false; // a socket opened before: the next open is a reconnect
  let reconnectTimer = null;
  let savedLive = new Map(); // saved stream id -> query subscribed on this socket

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function subscribeList() {
    const old = state.live;
    state.live = "q" + state.listGen;
    if (!ws || ws.readyState !== WebSocket.OPEN) return; // onopen subscribes
    if (old !== state.live) send({ type: "unsubscribe", stream: old });
    send({ type: "subscribe", stream: state.live, query: state.query, cursor: state.cursor });
  }

  // Each saved stream rides on the same socket, live from now, only to move
  // its badge: the counts themselves come from /api/streams.
  function syncSavedLive() {
    const wanted = new Map(state.streams.slice(0, MAX_SAVED_LIVE).map((s) => [s.id, s.query]));
    for (const [id, query] of savedLive) {
      if (wanted.get(id) !== query) {
        send({ type: "unsubscribe", stream: "saved-" + id });
        savedLive.delete(id);
      }
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    for (const [id, query] of wanted) {
      if (!savedLive.has(id)) {
        send({ type: "subscribe", stream: "saved-" + id, query: query, cursor: null });
        savedLive.set(id, query);
      }
    }
  }

  function onMessage(m) {
    if (!m || typeof m !== "object") return;
    const name = typeof m.stream === "string" ? m.stream : "";
    if (m.type === "subscribed") {
      retry = 0;
      if (name === state.live) setStatus("live", "live");
    } else if (m.type === "event" && m.event) {
      if (name === state.live) addLive(m.event);
      else if (name.startsWith("saved-")) {
        if (Number.isSafeInteger(m.event.id)) note(m.event.id);
        if (toId(name.slice(6)) === state.stream) scheduleMarkRead();
        else scheduleRefresh();
      }
    } else if (m.type === "error" && (name === state.live || !name)) {
      setStatus("offline", m.message);
    }
  }

  function connect() {
    reconnectTimer = null;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(proto + "//" + location.host + "/ws");
    ws = sock;
    savedLive = new Map();
    sock.onopen = function () {
      if (state.valid) {
        send({ type: "subscribe", stream: state.live, query: state.query, cursor: state.cursor });
      } else {
        setStatus("offline", "not live");
      }
      syncSavedLive();
      if (opened) refreshStreams(); // badges missed what came while away
      opened = true;
    };
    sock.onmessage = function (msg) {
      let m = null;
      try {
        m = JSON.parse(msg.data);
      } catch (_) {
        return; // not JSON: nothing for this page
      }
      onMessage(m);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      setStatus("offline", navigator.onLine === false ? "offline" : "reconnecting…");
      // Signed out (1008), or a refused handshake: a signed-out page goes to sign in.
      if (ev.code === 1008 || ev.code === 1006) {
        fetch("/api/events?limit=1", { credentials: "same-origin" }).then(
          function (r) {
            if (r.status === 401) toSignIn();
          },
          function () {},
        );
      }
      const delay = Math.min(30000, 500 * Math.pow(2, retry++)) * (0.5 + Math.random() / 2);
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  window.addEventListener("offline", function () {
    setStatus("offline", "offline");
  });
  window.addEventListener("online", function () {
    if (reconnectTimer !== null) {
      clearTimeout(reconnectTimer);
      retry = 0;
      connect();
    }
  });

  // --- saved streams ------------------------------------------------------------------

  // Each stream's "⋯" button shows what can be done to it: edit (rename, change
  // the query) in place, move up or down (also Alt+↑/↓ on any of its controls,
  // or drag and drop), and delete after a second click. The list is rebuilt
  // from state on every change: the focused control is found again by its
  // stream and data-key, and an open editor is kept as it is, so a badge that
  // moves never takes the caret from someone typing.

  const streamsStatus = $("streams-status");
  const streamsError = $("streams-error");
  const deleting = new Set(); // stream ids whose DELETE is on its way

  function findStream(id) {
    return id === null || id === undefined ? null : state.streams.find((s) => s.id === id) || null;
  }

  function say(text) {
    if (streamsStatus) streamsStatus.textContent = text;
  }

  function showStreamsError(text) {
    if (!streamsError) return;
    streamsError.textContent = text;
    streamsError.hidden = !text;
  }

  function failure(what, res) {
    const data = res.data || {};
    if (typeof data.error === "string") return what + ": " + data.error;
    return what + (res.status ? " (HTTP " + res.status + ")." : ": the server did not answer.");
  }

  function button(text, cls, key) {
    const b = el("button", cls, text);
    b.type = "button";
    if (key) b.dataset.key = key;
    return b;
  }

  function listItem(id) {
    return streamList ? streamList.querySelector('li[data-stream="' + (id === null ? "" : String(id)) + '"]') : null;
  }

  // Focuses a stream's control (its link if that control is gone); false if
  // the stream itself is gone.
  function focusStream(id, key) {
    const li = listItem(id);
    const target = li && (li.querySelector('[data-key="' + key + '"]') || li.querySelector('[data-key="link"]'));
    if (target) target.focus();
    return !!target;
  }

  // After an answer from the server: focus moves only if the reader has not
  // gone somewhere else meanwhile.
  function settleFocus(id, key) {
    const now = document.activeElement;
    if (now && now !== document.body && !streamList.contains(now)) return;
    if (!focusStream(id, key) && allLink) allLink.focus();
  }

  function focusedControl() {
    const node = document.activeElement;
    if (!streamList || !node || !streamList.contains(node) || !node.dataset.key) return null;
    const li = node.closest("li[data-stream]");
    return li ? { node: node, stream: li.dataset.stream, key: node.dataset.key } : null;
  }

  function feedLinks(feeds) {
    const formats = [["atom", "Atom"], ["rss", "RSS"], ["json", "JSON"]];
    const found = formats.filter(([k]) => feeds && typeof feeds[k] === "string" && safeUrl(feeds[k]));
    if (!found.length) return null;
    const p = el("p", "stream-feeds", "Feed: ");
    found.forEach(function ([k, label], i) {
      const a = el("a", null, label);
      a.href = safeUrl(feeds[k]);
      a.title = "Your private " + label + " feed of this stream";
      if (i) p.append(" · ");
      p.append(a);
    });
    return p;
  }

  function unreadBadge(s) {
    if (s.unread === null) {
      // The saved query no longer parses: opening it shows why.
      const bad = el("span", "badge bad", "!");
      bad.title = "This stream's query no longer parses";
      return [bad, ", query needs fixing"];
    }
    const n = Number.isSafeInteger(s.unread) && s.unread > 0 ? s.unread : 0;
    const text = String(n) + (s.unread_more ? "+" : "");
    const badge = el("span", "badge unread", text);
    badge.hidden = n === 0;
    return [badge, n ? ", " + text + " unread" : ""];
  }

  function confirmItem(li, s) {
    li.classList.add("confirming");
    const question = el("span", "confirm", state.confirmNote || "Delete “" + s.name + "”?");
    question.id = "confirm-" + s.id;
    const yes = button("Delete", "danger", "yes");
    const no = button("Cancel", null, "no");
    for (const b of [yes, no]) b.setAttribute("aria-describedby", question.id);
    yes.addEventListener("click", function () {
      deleteStream(s);
    });
    no.addEventListener("click", function () {
      cancelDelete(s.id);
    });
    li.append(question, yes, no);
    return li;
  }

  function actionsFor(s) {
    const at = state.streams.findIndex((x) => x.id === s.id);
    const box = el("div", "stream-actions");
    box.id = "manage-" + s.id;
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Manage " + s.name);
    const edit = button("Edit", null, "edit");
    edit.title = "Rename it or change its query";
    edit.addEventListener("click", function () {
      openEditor(s.id);
    });
    const up = button("Move up", null, "up");
    const down = button("Move down", null, "down");
    // aria-disabled, not disabled: the button keeps focus at the end of the list.
    up.setAttribute("aria-disabled", at <= 0 ? "true" : "false");
    down.setAttribute("aria-disabled", at >= state.streams.length - 1 ? "true" : "false");
    up.setAttribute("aria-keyshortcuts", "Alt+ArrowUp");
    down.setAttribute("aria-keyshortcuts", "Alt+ArrowDown");
    up.title = "Alt+↑";
    down.title = "Alt+↓";
    up.addEventListener("click", function () {
      moveStream(s.id, -1);
    });
    down.addEventListener("click", function () {
      moveStream(s.id, 1);
    });
    const del = button("Delete", "danger", "delete");
    del.addEventListener("click", function () {
      askDelete(s.id);
    });
    box.append(edit, up, down, del);
    return box;
  }

  function streamItem(s) {
    const li = el("li", "stream");
    li.dataset.stream = String(s.id);
    if (state.confirming === s.id) return confirmItem(li, s);
    li.draggable = true;
    const [badge, said] = unreadBadge(s);
    const a = el("a", "stream-link");
    a.dataset.key = "link";
    a.href = urlFor(s.query, s.id);
    a.title = s.query;
    a.setAttribute("aria-label", s.name + said);
    a.setAttribute("aria-keyshortcuts", "Alt+ArrowUp Alt+ArrowDown");
    a.append(el("span", "stream-name", s.name), badge);
    a.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      load(s.query, { push: true, stream: s.id });
    });
    const open = state.managing === s.id;
    const more = button("⋯", "stream-more", "more");
    more.title = "Edit, move or delete";
    more.setAttribute("aria-label", "Manage stream " + s.name);
    more.setAttribute("aria-expanded", open ? "true" : "false");
    more.addEventListener("click", function () {
      state.managing = state.managing === s.id ? null : s.id;
      renderStreams();
    });
    li.append(a, more);
    if (open) {
      more.setAttribute("aria-controls", "manage-" + s.id);
      li.append(actionsFor(s));
    }
    if (s.id === state.stream) {
      a.setAttribute("aria-current", "page");
      const feeds = feedLinks(s.feeds);
      if (feeds) li.append(feeds);
    }
    return li;
  }

  const allItem = streamList && streamList.querySelector('li[data-stream=""]');
  const allLink = allItem && allItem.querySelector("a");
  if (allLink) {
    allLink.dataset.key = "link";
    allLink.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      load("", { push: true, stream: null });
    });
  }

  // The children become `nodes`, in order, without moving a node that stays
  // (a moved node would lose focus, and an input its caret).
  function place(parent, nodes) {
    const keep = new Set(nodes);
    for (const child of Array.from(parent.children)) if (!keep.has(child)) child.remove();
    nodes.forEach(function (node, i) {
      if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
    });
  }

  function renderStreams() {
    if (!streamList) return;
    const had = focusedControl();
    if (allItem) {
      const onAll = state.stream === null && state.valid && state.query === "";
      if (onAll) allLink.setAttribute("aria-current", "page");
      else allLink.removeAttribute("aria-current");
      for (const child of Array.from(allItem.children)) if (child !== allLink) child.remove();
      const feeds = onAll ? feedLinks(state.allFeeds) : null;
      if (feeds) allItem.append(feeds);
    }
    // What was open on a stream deleted elsewhere closes with it.
    if (state.editing && !findStream(state.editing.id)) state.editing = null;
    if (!findStream(state.managing)) state.managing = null;
    if (!findStream(state.confirming)) state.confirming = null;
    const editing = state.editing;
    const nodes = state.streams.map((s) => (editing && editing.id === s.id ? editing.li : streamItem(s)));
    place(streamList, allItem ? [allItem, ...nodes] : nodes);
    if (had && !had.node.isConnected && !focusStream(had.stream, had.key) && allLink) allLink.focus();
    const none = $("streams-empty");
    if (none) none.hidden = state.streams.length > 0;
    updateStates();
  }

  // --- deleting: a second click, in the stream's place

  function askDelete(id) {
    state.confirming = id;
    state.confirmNote = null;
    renderStreams();
    focusStream(id, "no");
  }

  function cancelDelete(id) {
    state.confirming = null;
    state.confirmNote = null;
    renderStreams();
    focusStream(id, state.managing === id ? "delete" : "more");
  }

  function deleteStream(s) {
    if (deleting.has(s.id)) return;
    deleting.add(s.id);
    return serial(async function () {
      let res;
      try {
        res = await api("DELETE", "/api/streams/" + s.id);
      } catch (_) {
        res = { ok: false, status: 0, data: null };
      }
      deleting.delete(s.id);
      if (!res.ok && res.status !== 404) {
        state.confirmNote = failure("Could not delete “" + s.name + "”", res);
        renderStreams();
        return;
      }
      const at = state.streams.findIndex((x) => x.id === s.id);
      state.confirming = null;
      state.confirmNote = null;
      if (state.stream === s.id) {
        state.stream = null;
        history.replaceState(null, "", urlFor(state.query, null));
      }
      state.streams = state.streams.filter((x) => x.id !== s.id);
      renderStreams();
      syncSavedLive();
      // Focus goes to the stream that took its place (or the one above).
      const next = state.streams[Math.min(at, state.streams.length - 1)];
      settleFocus(next ? next.id : null, "link");
      say("Deleted “" + s.name + "”.");
    });
  }

  // --- editing: name and query in the stream's place; the server's error
  // next to the field at fault

  function openEditor(id) {
    const s = findStream(id);
    if (!s) return;
    state.confirming = null;
    state.editing = { id: id, li: editorFor(s) };
    renderStreams();
    const name = state.editing.li.querySelector('[data-key="name"]');
    name.focus();
    name.select();
  }

  function closeEditor(li, key) {
    if (!state.editing || state.editing.li !== li) return;
    const id = state.editing.id;
    state.editing = null;
    renderStreams();
    focusStream(id, key);
  }

  function editorFor(s) {
    const li = el("li", "stream editing");
    li.dataset.stream = String(s.id);
    const form = el("form", "stream-edit stacked");
    form.noValidate = true; // an empty name gets the server's words, like any other error
    form.setAttribute("aria-label", "Edit stream " + s.name);
    function field(label, key, value, errorTag, errorClass) {
      const input = el("input");
      input.id = "edit-" + key + "-" + s.id;
      input.value = value;
      input.autocomplete = "off";
      input.dataset.key = key;
      const error = el(errorTag, errorClass);
      error.id = input.id + "-error";
      error.hidden = true;
      error.setAttribute("role", "alert");
      input.setAttribute("aria-describedby", error.id);
      const tag = el("label", null, label);
      tag.htmlFor = input.id;
      form.append(tag, input, error);
      return [input, error];
    }
    const [name, nameError] = field("Name", "name", s.name, "p", "field-error");
    name.maxLength = 100;
    const [query, queryErr] = field("Query", "query", s.query, "div", "query-error");
    query.spellcheck = false;
    const note = el("p", "field-error");
    note.hidden = true;
    note.setAttribute("role", "alert");
    const save = el("button", null, "Save");
    save.type = "submit";
    const cancel = button("Cancel", null, "cancel");
    const buttons = el("div", "buttons");
    buttons.append(save, " ", cancel);
    form.append(note, buttons);
    li.append(form);

    function clearErrors() {
      for (const box of [nameError, queryErr, note]) {
        box.hidden = true;
        box.replaceChildren();
      }
      name.removeAttribute("aria-invalid");
      query.removeAttribute("aria-invalid");
    }

    cancel.addEventListener("click", function () {
      closeEditor(li, "edit");
    });
    form.addEventListener("keydown", function (ev) {
      if (ev.key !== "Escape" || ev.isComposing) return;
      ev.preventDefault();
      ev.stopPropagation(); // not the page's Esc, which leaves a field for the list
      closeEditor(li, "edit");
    });

    let busy = false;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (busy) return;
      const now = findStream(s.id);
      if (!now) return closeEditor(li, "link");
      // Only what changed: a rename elsewhere is not undone by a query edit here.
      const body = {};
      if (name.value.trim() !== now.name) body.name = name.value;
      if (query.value !== now.query) body.query = query.value;
      if (body.name === undefined && body.query === undefined) return closeEditor(li, "link");
      busy = true;
      form.setAttribute("aria-busy", "true");
      serial(async function () {
        let res;
        try {
          res = await api("PATCH", "/api/streams/" + s.id, body);
        } catch (_) {
          res = { ok: false, status: 0, data: null };
        }
        busy = false;
        form.removeAttribute("aria-busy");
        const data = res.data || {};
        if (res.ok && Number.isSafeInteger(data.id)) {
          edited(li, data, body.query !== undefined);
          return;
        }
        clearErrors();
        if (res.status === 404) {
          note.textContent = "This stream was deleted meanwhile.";
          note.hidden = false;
          refreshStreams();
          return;
        }
        const message = typeof data.error === "string" ? data.error : failure("Could not save the stream", res);
        if (data.field === "name") {
          nameError.textContent = message;
          nameError.hidden = false;
          name.setAttribute("aria-invalid", "true");
          name.focus();
        } else if (data.field === "query" && body.query !== undefined) {
          queryErr.replaceChildren(...queryErrorParts(message, data.position, body.query));
          queryErr.hidden = false;
          query.setAttribute("aria-invalid", "true");
          query.focus();
          if (Number.isInteger(data.position) && query.value === body.query) {
            const at = Math.max(0, Math.min(data.position, body.query.length));
            query.setSelectionRange(at, at);
          }
        } else {
          note.textContent = message;
          note.hidden = false;
        }
      });
    });
    return li;
  }

  function edited(li, data, queryChanged) {
    state.streams = state.streams.map((x) => (x.id === data.id ? data : x));
    const open = state.editing && state.editing.li === li;
    if (open) {
      state.editing = null;
      state.managing = null;
    }
    renderStreams();
    syncSavedLive();
    if (open) settleFocus(data.id, "link");
    say("Saved “" + data.name + "”.");
    // The stream on view shows what its new query matches.
    if (queryChanged && state.stream === data.id) load(data.query, { replace: true, stream: data.id });
  }

  // --- ordering: the new order shows at once and is saved behind it

  function moveStream(id, delta) {
    const from = state.streams.findIndex((s) => s.id === id);
    const to = from + delta;
    if (from < 0 || to < 0 || to >= state.streams.length) return;
    const order = state.streams.slice();
    order.splice(to, 0, order.splice(from, 1)[0]);
    saveOrder(order, id);
  }

  function saveOrder(order, movedId) {
    state.streams = order;
    state.orderPending += 1;
    markSaving();
    renderStreams();
    syncSavedLive();
    const at = order.findIndex((s) => s.id === movedId);
    say("“" + order[at].name + "” moved to " + (at + 1) + " of " + order.length + ".");
    const ids = order.map((s) => s.id);
    serial(async function () {
      // Saves run in turn, so any other pending one is newer: only the newest need be sent.
      if (state.orderPending > 1) {
        state.orderPending -= 1;
        return;
      }
      let res;
      try {
        res = await api("PUT", "/api/streams/order", { ids: ids }, true);
      } catch (_) {
        res = { ok: false, status: 0, data: null };
      }
      state.orderPending -= 1;
      markSaving();
      if (res.ok) {
        showStreamsError("");
        return;
      }
      showStreamsError(failure("Could not save the new order", res));
      refreshStreams(); // the order the server has
    });
  }

  // The list says it is busy while a new order is on its way to the server.
  function markSaving() {
    streamList.setAttribute("aria-busy", state.orderPending ? "true" : "false");
  }

  // A listing fetched while a new order is still being saved keeps that order.
  function inOrder(streams, ids) {
    const rank = new Map(ids.map((id, i) => [id, i]));
    return streams
      .map((s, i) => [rank.has(s.id) ? rank.get(s.id) : ids.length + i, s])
      .sort((a, b) => a[0] - b[0])
      .map((pair) => pair[1]);
  }

  const DRAG = "application/x-tidings-stream";
  let dragged = null; // the stream id being dragged

  function dropTarget(ev) {
    if (dragged === null || !ev.dataTransfer || !Array.from(ev.dataTransfer.types).includes(DRAG)) return null;
    const li = ev.target instanceof Element ? ev.target.closest("li.stream") : null;
    if (!li || !streamList.contains(li)) return null;
    const id = toId(li.dataset.stream); // null: "All", so the top
    const rect = li.getBoundingClientRect();
    return { li: li, id: id, after: id === null || ev.clientY > rect.top + rect.height / 2 };
  }

  function markDrop(target) {
    for (const li of streamList.querySelectorAll(".drop-before, .drop-after")) li.classList.remove("drop-before", "drop-after");
    if (target) target.li.classList.add(target.after ? "drop-after" : "drop-before");
  }

  if (streamList && canSave) {
    streamList.addEventListener("keydown", function (ev) {
      if (typing(ev.target) || ev.isComposing || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
      const li = ev.target.closest("li[data-stream]");
      const id = li ? toId(li.dataset.stream) : null;
      if (id === null) return;
      if (ev.altKey && (ev.key === "ArrowUp" || ev.key === "ArrowDown")) {
        ev.preventDefault();
        moveStream(id, ev.key === "ArrowUp" ? -1 : 1);
      } else if (ev.key === "Escape" && !ev.altKey && state.confirming === id) {
        ev.preventDefault();
        cancelDelete(id);
      } else if (ev.key === "Escape" && !ev.altKey && state.managing === id) {
        ev.preventDefault();
        state.managing = null;
        renderStreams();
        focusStream(id, "more");
      }
    });

    streamList.addEventListener("dragstart", function (ev) {
      const li = ev.target instanceof Element ? ev.target.closest("li.stream") : null;
      dragged = li && li.draggable ? toId(li.dataset.stream) : null;
      if (dragged === null) return;
      ev.dataTransfer.effectAllowed = "move";
      ev.dataTransfer.setData(DRAG, String(dragged));
      li.classList.add("dragging");
    });
    streamList.addEventListener("dragover", function (ev) {
      const target = dropTarget(ev);
      if (!target) return;
      ev.preventDefault();
      ev.dataTransfer.dropEffect = "move";
      markDrop(target);
    });
    streamList.addEventListener("dragleave", function (ev) {
      if (!(ev.relatedTarget instanceof Node && streamList.contains(ev.relatedTarget))) markDrop(null);
    });
    streamList.addEventListener("drop", function (ev) {
      const target = dropTarget(ev);
      markDrop(null);
      if (!target) return;
      ev.preventDefault();
      const moving = findStream(dragged);
      dragged = null;
      if (!moving || target.id === moving.id) return;
      const order = state.streams.filter((s) => s !== moving);
      const at = target.id === null ? 0 : order.findIndex((s) => s.id === target.id) + (target.after ? 1 : 0);
      order.splice(at, 0, moving);
      if (order.every((s, i) => s === state.streams[i])) return;
      saveOrder(order, moving.id);
    });
    streamList.addEventListener("dragend", function () {
      dragged = null;
      markDrop(null);
      for (const li of streamList.querySelectorAll(".dragging")) li.classList.remove("dragging");
    });
  }

  function refreshStreams() {
    if (!canSave) return Promise.resolve();
    return serial(async function () {
      let res;
      try {
        res = await api("GET", "/api/streams");
      } catch (_) {
        return;
      }
      if (!res.ok || !res.data || !Array.isArray(res.data.streams)) return;
      const streams = res.data.streams.filter((s) => Number.isSafeInteger(s.id));
      state.streams = state.orderPending ? inOrder(streams, state.streams.map((s) => s.id)) : streams;
      state.allFeeds = res.data.feeds || null;
      if (state.stream !== null && !findStream(state.stream)) {
        state.stream = null; // deleted elsewhere
        history.replaceState(null, "", urlFor(state.query, null));
      }
      renderStreams();
      syncSavedLive();
      const viewed = findStream(state.stream);
      if (viewed && viewed.unread > 0) scheduleMarkRead();
    });
  }

  let refreshTimer = null;
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshStreams, 400);
  }

  // Viewing a saved stream reads it, up to the newest event shown.
  const markedUpTo = new Map();
  let markTimer = null;

  function scheduleMarkRead(delay) {
    clearTimeout(markTimer);
    markTimer = setTimeout(markRead, delay === undefined ? 300 : delay);
  }

  function markRead() {
    return serial(async function () {
      const id = state.stream;
      const first = list.firstElementChild;
      if (id === null || !first || !canSave) return;
      const upTo = Number(first.dataset.id);
      if (upTo <= (markedUpTo.get(id) || 0)) return;
      let res;
      try {
        res = await api("POST", "/api/streams/" + id + "/read", { up_to: upTo });
      } catch (_) {
        return;
      }
      if (!res.ok) return;
      markedUpTo.set(id, upTo);
      const s = findStream(id);
      if (s) {
        s.unread = 0;
        renderStreams();
      }
    });
  }

  function closeSaveForm() {
    if (!saveForm) return;
    saveForm.hidden = true;
    saveError.hidden = true;
    saveName.removeAttribute("aria-invalid");
    updateStates();
  }

  if (saveForm) {
    saveOpen.addEventListener("click", function () {
      $("save-query").textContent = state.query;
      saveOpen.hidden = true;
      saveForm.hidden = false;
      saveName.value = "";
      saveName.focus();
    });
    $("save-cancel").addEventListener("click", closeSaveForm);
    saveForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const name = saveName.value.trim();
      const query = state.query;
      serial(async function () {
        let res;
        try {
          res = await api("POST", "/api/streams", { name: name, query: query });
        } catch (_) {
          res = { ok: false, status: 0, data: null };
        }
        const data = res.data || {};
        if (res.ok && Number.isSafeInteger(data.id)) {
          closeSaveForm();
          if (state.query === query) {
            state.stream = data.id;
            history.replaceState(null, "", urlFor(query, data.id));
          }
          refreshStreams();
          scheduleMarkRead(0);
          return;
        }
        saveError.hidden = false;
        saveError.textContent =
          typeof data.error === "string" ? data.error : "Could not save the stream" + (res.status ? " (HTTP " + res.status + ")." : ".");
        if (Number.isInteger(data.position)) showQueryError(data.error, data.position, query);
        else saveName.setAttribute("aria-invalid", "true");
      });
    });
  }

  // --- keyboard ---------------------------------------------------------------------

  function select(li, focus) {
    if (current) current.classList.remove("current");
    current = li;
    li.classList.add("current");
    if (focus) {
      li.focus({ preventScroll: true });
      li.scrollIntoView({ block: "nearest" });
    }
  }

  function move(delta) {
    const all = items();
    if (!all.length) return;
    let i = current && current.parentNode === list ? all.indexOf(current) : -1;
    i = i < 0 ? 0 : Math.max(0, Math.min(all.length - 1, i + delta));
    select(all[i], true);
    if (delta > 0 && i >= all.length - 3) loadOlder();
  }

  function openCurrent() {
    if (!current || current.parentNode !== list) return;
    const a = current.querySelector("h2.title a[href]");
    const href = a && safeUrl(a.getAttribute("href"));
    if (href) window.open(href, "_blank", "noopener,noreferrer");
  }

  function typing(target) {
    return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    const target = ev.target;
    if (ev.key === "Escape" && typing(target)) {
      if (target === saveName) closeSaveForm();
      target.blur();
      if (current && current.parentNode === list) current.focus({ preventScroll: true });
      return;
    }
    if (typing(target)) return;
    if (ev.key === "j") move(1);
    else if (ev.key === "k") move(-1);
    else if (ev.key === "o" || (ev.key === "Enter" && target === current)) openCurrent();
    else if (ev.key === "/") {
      input.focus();
      input.select();
    } else return;
    ev.preventDefault();
  });

  list.addEventListener("click", function (ev) {
    const li = ev.target.closest("li.event");
    if (li) select(li, false);
  });

  // --- start ------------------------------------------------------------------------

  list.querySelectorAll("li.event").forEach(paint);
  const params = new URLSearchParams(location.search);
  if (state.valid) state.stream = toId(params.get("stream"));
  const initial = nav ? JSON.parse(nav.dataset.streams || "{}") : {};
  state.streams = Array.isArray(initial.streams) ? initial.streams.filter((s) => Number.isSafeInteger(s.id)) : [];
  state.allFeeds = initial.feeds || null;
  if (state.stream !== null && !findStream(state.stream)) {
    state.stream = null;
    history.replaceState(null, "", urlFor(state.query, null));
  }
  renderStreams();
  if (state.stream !== null) scheduleMarkRead(0);

  setInterval(function () {
    for (const t of list.querySelectorAll("time[datetime]")) t.textContent = ago(t.getAttribute("datetime"));
  }, 30000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") refreshStreams();
  });

  if (!state.valid) setStatus("offline", "not live");
  connect();
})();
