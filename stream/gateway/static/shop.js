// The shopper page: send events for a user, show that user's recommendation lists live.
// Lists arrive over Server-Sent Events (/streams/users/{id}); a page load shows the cached
// list first (/users/{id}/recommendations). Each event's time to its list is measured here,
// from just before the POST to the moment the list is in the page.
"use strict";

const state = {
  user: null,
  source: null,          // the EventSource of the current user
  pending: new Map(),    // event_id -> {sentAt, label} for events that have no list yet
  latencies: [],         // ms, event -> list shown, for lists caused by this page's events
  timings: [],           // per such list: {id: its cause, arrived: ms from the event to the list's arrival, shown: ... to it shown}
  posted: new Map(),     // event_id -> ms from the event to its POST answered
  lists: 0,
  lastEventId: null,
  lastList: null,
  items: new Map(),      // item_id -> catalogue item
  offset: 0,
  query: { q: "", genre: "" },
};
window.streamrec = state; // read by the browser tests and the benchmark

const $ = (sel) => document.querySelector(sel);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "className") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw Object.assign(new Error(`${r.status} ${url}`), { status: r.status });
  return r.json();
}

function label(item) {
  if (!item) return null;
  return item.year ? `${item.title} (${item.year})` : item.title;
}

// -- the user ------------------------------------------------------------------------
function setUser(id) {
  id = String(id).trim();
  if (!id) return;
  state.user = id;
  state.pending.clear();
  state.lastList = null;
  $("#user-id").textContent = id;
  $("#user-input").value = id;
  localStorage.setItem("streamrec.user", id);
  const url = new URL(location.href);
  url.searchParams.set("user", id);
  history.replaceState(null, "", url);
  $("#recs").replaceChildren();
  $("#event-log").replaceChildren();
  $("#rec-cause").textContent = "Loading the last list…";
  $("#recs-panel").dataset.causeEventId = "";
  $("#recs-panel").dataset.covers = "";
  connect(id);
  loadCached(id);
}

function connect(id) {
  if (state.source) state.source.close();
  const source = new EventSource(`/streams/users/${encodeURIComponent(id)}`);
  state.source = source;
  let lost = false;
  source.addEventListener("open", () => {
    setConn("live", "status-ok");
    if (lost && source === state.source) loadCached(id); // lists sent while it was away: the cache has the last one
    lost = false;
  });
  source.addEventListener("error", () => { lost = true; setConn("reconnecting…", "status-warn"); });
  source.addEventListener("recommendation", (e) => {
    if (source !== state.source) return;
    onList(JSON.parse(e.data), "live", performance.now());
  });
}

function setConn(text, cls) {
  const node = $("#conn");
  node.textContent = text;
  node.className = cls;
}

async function loadCached(id) {
  try {
    const rec = await getJSON(`/users/${encodeURIComponent(id)}/recommendations`);
    if (state.user === id) onList(rec, "cache");
  } catch (err) {
    if (state.user === id && !state.lastList) {
      $("#rec-cause").textContent = err.status === 404
        ? "No list yet for this shopper: interact with an item."
        : `The cached list could not be read (${err.message}).`;
    }
  }
}

// -- events --------------------------------------------------------------------------
async function send(type, itemId, rating) {
  if (!state.user) { alert("Choose a shopper first"); return; }
  const event = { event_id: newId(), user_id: state.user, item_id: itemId, type, ts: Date.now() / 1000 };
  if (type === "rating") event.rating = rating;
  const what = `${type.replace("_", " ")}${type === "rating" ? " " + rating + "★" : ""} · ${label(state.items.get(itemId)) || itemId}`;
  const sentAt = performance.now();
  state.pending.set(event.event_id, { sentAt, label: what });
  state.lastEventId = event.event_id;
  document.body.dataset.lastEventId = event.event_id;
  const entry = el("li", {}, what + " ", el("span", { className: "muted" }, "sending…"));
  $("#event-log").prepend(entry);
  while ($("#event-log").children.length > 30) $("#event-log").lastChild.remove();
  try {
    const r = await fetch("/events", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(event) });
    const body = await r.json();
    if (!r.ok) {
      state.pending.delete(event.event_id);
      const d = body.detail && body.detail[0];
      entry.lastChild.textContent = `refused: ${d ? `${d.field || "body"}: ${d.msg}` : r.status}`;
      entry.lastChild.className = "error";
      return;
    }
    state.posted.set(event.event_id, performance.now() - sentAt);
    entry.lastChild.textContent = `sent (partition ${body.partition}, offset ${body.offset})`;
  } catch (err) {
    state.pending.delete(event.event_id);
    entry.lastChild.textContent = `not sent: ${err.message}`;
    entry.lastChild.className = "error";
  }
}

// -- lists ---------------------------------------------------------------------------
function onList(rec, how, arrivedAt) {
  if (rec.user_id !== state.user) return;
  // a cached list only when it is newer than the one shown (a live one may have come first)
  if (how === "cache" && state.lastList && Date.parse(state.lastList.emitted_at) >= Date.parse(rec.emitted_at)) return;
  const causes = [rec.cause_event_id, ...(rec.covers || [])].filter((id) => state.pending.has(id));
  const cause = state.pending.get(rec.cause_event_id) || (causes.length ? state.pending.get(causes[0]) : null);
  renderList(rec);
  const shownAt = performance.now();
  state.lastList = rec;
  state.lists += 1;
  const panel = $("#recs-panel");
  panel.dataset.causeEventId = rec.cause_event_id;
  panel.dataset.covers = (rec.covers || []).join(" ");
  panel.dataset.lists = String(state.lists);
  panel.classList.remove("fresh"); void panel.offsetWidth; panel.classList.add("fresh");
  const causeNode = $("#rec-cause");
  causeNode.replaceChildren();
  if (cause) {
    const sentAt = Math.min(...causes.map((id) => state.pending.get(id).sentAt));
    const ms = shownAt - sentAt;
    state.latencies.push(ms);
    state.timings.push({ id: rec.cause_event_id, arrived: (arrivedAt ?? shownAt) - sentAt, shown: ms });
    for (const id of causes) state.pending.delete(id);
    panel.dataset.latencyMs = ms.toFixed(1);
    causeNode.append(`Because of your ${cause.label}`,
      causes.length > 1 ? ` (and ${causes.length - 1} earlier event${causes.length > 2 ? "s" : ""})` : "",
      el("br"), el("strong", {}, `${ms.toFixed(1)} ms`), " from event to this list");
    updateLatency();
  } else {
    causeNode.append(how === "cache" ? "The last list (from the cache, as at page load)" : "A list caused elsewhere (another tab or device)",
      el("br"), el("span", { className: "muted" }, `model ${rec.model_version} · emitted ${new Date(rec.emitted_at).toLocaleTimeString()}`));
  }
}

function renderList(rec) {
  const missing = rec.items.map((i) => i.item_id).filter((id) => !state.items.has(id));
  const rows = rec.items.map((it, n) => {
    const item = state.items.get(it.item_id);
    return el("li", { dataset: { itemId: it.item_id } },
      el("span", { className: "rank" }, String(n + 1)),
      el("div", {},
        el("div", { className: "title" }, label(item) || `item ${it.item_id}`),
        el("div", { className: "sub" }, `score ${it.score.toFixed(3)} `, el("span", { className: `badge ${it.source}` }, it.source),
          item && item.genres.length ? ` ${item.genres.slice(0, 3).join(", ")}` : "")),
      el("span", { className: "actions" },
        el("button", { type: "button", onclick: () => send("view", it.item_id) }, "view"),
        el("button", { type: "button", onclick: () => send("click", it.item_id) }, "click")));
  });
  $("#recs").replaceChildren(...rows);
  if (missing.length) {
    getJSON(`/items?ids=${missing.map(encodeURIComponent).join(",")}`).then((r) => {
      for (const item of r.items) state.items.set(item.item_id, item);
      if (state.lastList === rec) renderList(rec);
    }).catch(() => {});
  }
}

function updateLatency() {
  const xs = [...state.latencies].sort((a, b) => a - b);
  const last = state.latencies[state.latencies.length - 1];
  $("#latency-last").textContent = `${last.toFixed(1)} ms`;
  $("#latency-p50").textContent = `${xs[Math.floor((xs.length - 1) / 2)].toFixed(1)} ms`;
  $("#latency-n").textContent = String(xs.length);
}

// -- the catalogue -------------------------------------------------------------------
function itemCard(item) {
  const rating = el("select", { "aria-label": "rating" },
    ...[5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0.5].map((r) => el("option", { value: String(r) }, `${r}★`)));
  return el("article", { className: "item", dataset: { itemId: item.item_id } },
    el("h3", {}, item.title),
    el("div", { className: "meta" }, [item.year, item.genres.join(", ")].filter(Boolean).join(" · ") || "\u00a0"),
    el("div", { className: "actions" },
      el("button", { type: "button", dataset: { action: "view" }, onclick: () => send("view", item.item_id) }, "View"),
      el("button", { type: "button", dataset: { action: "click" }, onclick: () => send("click", item.item_id) }, "Click"),
      el("button", { type: "button", dataset: { action: "add_to_cart" }, onclick: () => send("add_to_cart", item.item_id) }, "Add to cart"),
      rating,
      el("button", { type: "button", dataset: { action: "rating" }, onclick: () => send("rating", item.item_id, Number(rating.value)) }, "Rate"),
      el("button", { type: "button", className: "primary", dataset: { action: "purchase" }, onclick: () => send("purchase", item.item_id) }, "Buy")));
}

async function loadItems(reset) {
  if (reset) { state.offset = 0; $("#items").replaceChildren(); }
  const params = new URLSearchParams({ limit: "24", offset: String(state.offset), q: state.query.q });
  if (state.query.genre) params.set("genre", state.query.genre);
  const page = await getJSON(`/items?${params}`);
  for (const item of page.items) state.items.set(item.item_id, item);
  $("#items").append(...page.items.map(itemCard));
  state.offset += page.items.length;
  $("#more").hidden = state.offset >= page.total;
  $("#catalogue-info").textContent = `${page.total} items${state.query.q || state.query.genre ? " match" : ""}, most popular first`;
  if (state.lastList) renderList(state.lastList);
}

async function init() {
  const info = await getJSON("/catalogue");
  const genre = $("#search select[name=genre]");
  genre.append(...info.genres.map((g) => el("option", { value: g }, g)));
  $("#sample-users").append(...info.users.slice(0, 8).map((u) =>
    el("button", { type: "button", className: "chip", title: `shop as user ${u}`, onclick: () => setUser(u) }, u)));
  $("#user-form").addEventListener("submit", (e) => { e.preventDefault(); setUser($("#user-input").value); });
  $("#new-user").addEventListener("click", () => setUser(`web-${newId().slice(0, 8)}`));
  $("#search").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    state.query = { q: String(form.get("q") || ""), genre: String(form.get("genre") || "") };
    loadItems(true);
  });
  $("#more").addEventListener("click", () => loadItems(false));
  await loadItems(true);
  const wanted = new URL(location.href).searchParams.get("user") || localStorage.getItem("streamrec.user");
  setUser(wanted || info.users[0] || `web-${newId().slice(0, 8)}`);
  document.body.dataset.ready = "1";
}

init().catch((err) => { $("#catalogue-info").textContent = `The catalogue could not be loaded: ${err.message}`; });
