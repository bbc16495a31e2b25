// The dashboard on top of the server-rendered page: queries load without a
// reload (the URL follows, back and forward work), older history loads as the
// reader scrolls, one websocket carries the current query live (resuming from
// the last id it saw) and each saved stream's unread badge, and j/k/o move and
// open. Text from events only ever goes in through textContent, and only
// http(s) links are made.
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

  async function api(method, url, body) {
    const init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
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
    paint(li);
    return li;
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
  function showQueryError(message, position, query) {
    const where = Number.isInteger(position) ? " (at character " + (position + 1) + ")" : "";
    const parts = [el("span", "message", message.endsWith(where) ? message : message + where)];
    if (Number.isInteger(position)) {
      const at = Math.max(0, Math.min(position, query.length));
      const echo = el("code", "query-echo");
      echo.append(query.slice(0, at), el("mark", null, query.slice(at, at + 1) || " "), query.slice(at + 1));
      parts.push(echo);
      if (document.activeElement === input && input.value === query) input.setSelectionRange(at, at);
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

  function findStream(id) {
    return id === null || id === undefined ? null : state.streams.find((s) => s.id === id) || null;
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

  function streamItem(s) {
    const li = el("li", "stream");
    li.dataset.stream = String(s.id);
    if (state.confirming === s.id) {
      li.classList.add("confirming");
      const question = el("span", "confirm", "Delete “" + s.name + "”?");
      const yes = el("button", "danger", "Delete");
      yes.type = "button";
      const no = el("button", null, "Keep");
      no.type = "button";
      no.addEventListener("click", function () {
        state.confirming = null;
        renderStreams();
      });
      yes.addEventListener("click", function () {
        yes.disabled = true;
        deleteStream(s, question, yes);
      });
      li.append(question, yes, no);
      return li;
    }
    const [badge, said] = unreadBadge(s);
    const a = el("a", "stream-link");
    a.href = urlFor(s.query, s.id);
    a.title = s.query;
    a.setAttribute("aria-label", s.name + said);
    a.append(el("span", "stream-name", s.name), badge);
    a.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      load(s.query, { push: true, stream: s.id });
    });
    const del = el("button", "stream-delete", "×");
    del.type = "button";
    del.title = "Delete this stream";
    del.setAttribute("aria-label", "Delete stream " + s.name);
    del.addEventListener("click", function () {
      state.confirming = s.id;
      renderStreams();
      const keep = streamList.querySelector('li.confirming button:not(.danger)');
      if (keep) keep.focus();
    });
    li.append(a, del);
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
    allLink.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      load("", { push: true, stream: null });
    });
  }

  function renderStreams() {
    if (!streamList) return;
    if (allItem) {
      const onAll = state.stream === null && state.valid && state.query === "";
      if (onAll) allLink.setAttribute("aria-current", "page");
      else allLink.removeAttribute("aria-current");
      const feeds = onAll ? feedLinks(state.allFeeds) : null;
      allItem.replaceChildren(...(feeds ? [allLink, feeds] : [allLink]));
    }
    streamList.replaceChildren(...(allItem ? [allItem] : []), ...state.streams.map(streamItem));
    const none = $("streams-empty");
    if (none) none.hidden = state.streams.length > 0;
    updateStates();
  }

  function deleteStream(s, question, button) {
    return serial(async function () {
      let res;
      try {
        res = await api("DELETE", "/api/streams/" + s.id);
      } catch (_) {
        res = { ok: false, status: 0 };
      }
      if (!res.ok && res.status !== 404) {
        question.textContent = "Could not delete “" + s.name + "”" + (res.status ? " (HTTP " + res.status + ")." : ".");
        button.disabled = false;
        return;
      }
      state.confirming = null;
      if (state.stream === s.id) {
        state.stream = null;
        history.replaceState(null, "", urlFor(state.query, null));
      }
      state.streams = state.streams.filter((x) => x.id !== s.id);
      renderStreams();
      syncSavedLive();
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
      state.streams = res.data.streams.filter((s) => Number.isSafeInteger(s.id));
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
