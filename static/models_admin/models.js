// The model-admin page: live worker rows, the workers that hold each model (with their Unload
// buttons) and download progress from /ws/models/ (worker.* and download.* events), Cancel
// through the socket's `cancel` frame, and a confirmation before a model is deleted. Text only
// ever goes in with textContent.

import { LiveSocket } from "../wizweb/socket.js";

const workersTable = document.querySelector("#workers tbody");
const downloadsTable = document.querySelector("#downloads-table tbody");
const unloadTemplate = document.querySelector("#unload-form");
// A worker that has not beaten for this long is gone (its presence record expires at 8 s).
const GONE_AFTER_S = 8;
// worker name -> its last worker.status event
const workers = new Map();

function size(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function workerRow(name) {
  let row = workersTable.querySelector(`tr[data-worker="${CSS.escape(name)}"]`);
  if (!row) {
    workersTable.querySelector("td[colspan]")?.closest("tr")?.remove();
    row = document.createElement("tr");
    row.dataset.worker = name;
    const fields = ["name", "host", "models", "busy", "slots", "tokens_per_s", "rss_bytes", "memory",
      "host_available_bytes", "queue_depths", "heartbeat"];
    for (const field of fields) {
      const cell = document.createElement("td");
      cell.dataset.field = field;
      row.append(cell);
    }
    row.querySelector('[data-field="name"]').textContent = name;
    workersTable.append(row);
  }
  return row;
}

function showWorker(event) {
  const row = workerRow(event.worker);
  const set = (field, text) => {
    const cell = row.querySelector(`[data-field="${field}"]`);
    if (cell) cell.textContent = text;
  };
  set("host", event.host);
  set("models", event.models.length ? event.models.join(", ") : "—");
  set("busy", event.busy ? "busy" : "idle");
  showSlots(row.querySelector('[data-field="slots"]'), event);
  set("tokens_per_s", (event.tokens_per_s ?? 0).toFixed(1));
  set("rss_bytes", size(event.rss_bytes));
  set("memory", `${size(event.memory_used_bytes)} / ${size(event.memory_budget_bytes)}`);
  set("host_available_bytes", size(event.host_available_bytes));
  set("queue_depths", Object.entries(event.queue_depths).map(([q, n]) => `${q}: ${n}`).join(", "));
  // Ages are counted from when this page heard a beat, not from the worker's clock: a phone or
  // a worker machine whose clock is off would otherwise show every worker as gone.
  const heardAt = Date.now() / 1000;
  row.querySelector('[data-field="heartbeat"]').dataset.heartbeat = String(heardAt);
  const known = workers.has(event.worker);
  workers.set(event.worker, { ...event, heardAt });
  if (!known) addWorkerChoice(event.worker);
  showHolders();
}

// "3 / 8 busy, 1 waiting" over every model the worker holds, and the messages being written.
function showSlots(cell, event) {
  const held = Object.values(event.slots ?? {});
  const sum = (key) => held.reduce((total, slots) => total + (slots[key] ?? 0), 0);
  const waiting = sum("waiting");
  cell.textContent = `${sum("busy")} / ${sum("total")} busy${waiting ? `, ${waiting} waiting` : ""}`;
  const messages = event.messages ?? [];
  if (messages.length) {
    const list = document.createElement("small");
    list.textContent = `messages ${messages.join(", ")}`;
    cell.append(document.createElement("br"), list);
  }
}

// A worker that started after the page was rendered can be chosen in every Load form.
function addWorkerChoice(name) {
  for (const select of document.querySelectorAll('.load-form select[name="worker"]')) {
    if ([...select.options].some((option) => option.value === name)) continue;
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
}

function liveWorkers() {
  const now = Date.now() / 1000;
  return [...workers.values()].filter((w) => now - w.heardAt <= GONE_AFTER_S);
}

// "Held by" of each model: the live workers that hold it, each with its Unload button. A cell is
// rebuilt only when its holders change, so a button is never replaced under the pointer.
function showHolders() {
  const live = liveWorkers();
  for (const row of document.querySelectorAll("#local-models tr[data-model]")) {
    const holders = live.filter((w) => w.models.includes(row.dataset.name)).map((w) => w.worker);
    holders.sort();
    const cell = row.querySelector('[data-field="holders"]');
    if (cell.dataset.holders === holders.join(",")) continue;
    cell.dataset.holders = holders.join(",");
    cell.replaceChildren();
    for (const worker of holders) {
      const form = unloadTemplate.content.firstElementChild.cloneNode(true);
      form.setAttribute("action", row.dataset.action); // form.action is its "action" input
      form.querySelector('input[name="worker"]').value = worker;
      form.querySelector('[data-field="worker"]').textContent = worker;
      form.querySelector("button").setAttribute("aria-label", `Unload from ${worker}`);
      cell.append(form);
    }
    if (!holders.length) cell.textContent = "—";
    const state = row.querySelector('[data-field="state"]');
    if (state.dataset.fileState === "ready") state.textContent = holders.length ? "loaded" : "on disk, not loaded";
  }
}

function showWorkerModel(event) {
  if (event.type === "worker.loaded") {
    flash(`${event.name} is loaded on ${event.worker} with a context of ${event.n_ctx} tokens.`, "success");
    const loads = document.querySelector(`#local-models tr[data-model="${event.model}"] [data-field="loads"]`);
    if (loads) loads.textContent = String(event.n_ctx);
  }
  else if (event.type === "worker.unloaded") flash(`${event.name} is unloaded from ${event.worker}.`, "success");
  else flash(`${event.worker} could not load ${event.name}: ${event.error}`, "error");
}

function tickHeartbeats() {
  const now = Date.now() / 1000;
  for (const cell of workersTable.querySelectorAll('[data-field="heartbeat"]')) {
    const age = Math.max(0, now - Number(cell.dataset.heartbeat || now));
    cell.textContent = age < 3 ? "just now" : `${Math.round(age)} s ago`;
    cell.closest("tr").classList.toggle("stale", age > 6);
  }
  // Until the socket has told of a worker, the server's own "Held by" stands.
  if (workers.size) showHolders();
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${whole % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// The newest few messages, each with a close button, in a stack fixed at the bottom of the window.
const MAX_FLASHES = 3;

function closable(line) {
  const close = document.createElement("button");
  close.type = "button";
  close.className = "flash-close";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => line.remove());
  line.append(close);
}

function flash(text, kind) {
  const flashes = document.querySelector("#flashes");
  const line = document.createElement("p");
  line.className = `flash ${kind}`;
  line.setAttribute("role", "status");
  line.textContent = text;
  closable(line);
  flashes.append(line);
  while (flashes.children.length > MAX_FLASHES) flashes.firstElementChild.remove();
}
for (const line of document.querySelectorAll("#flashes .flash")) closable(line);

function downloadRow(id) {
  let row = downloadsTable.querySelector(`tr[data-download="${CSS.escape(String(id))}"]`);
  if (!row) {
    // Started elsewhere (another tab, the command line): a bare row until the page reloads.
    downloadsTable.querySelector("tr.empty")?.remove();
    row = document.createElement("tr");
    row.dataset.download = String(id);
    const name = document.createElement("td");
    name.textContent = `download ${id}`;
    const state = document.createElement("td");
    state.dataset.field = "state";
    const cell = document.createElement("td");
    cell.className = "progress-cell";
    const bar = document.createElement("progress");
    const text = document.createElement("span");
    text.dataset.field = "progress";
    const note = document.createElement("div");
    note.dataset.field = "note";
    note.className = "note";
    cell.append(bar, text, note);
    row.append(name, state, cell, document.createElement("td"), document.createElement("td"),
      document.createElement("td"));
    downloadsTable.prepend(row);
  }
  return row;
}

function setState(row, state) {
  row.dataset.state = state;
  row.querySelector('[data-field="state"]').textContent = state;
}

function showDownload(event) {
  const row = downloadRow(event.download);
  const note = row.querySelector('[data-field="note"]');
  const bar = row.querySelector("progress");
  if (event.type === "download.progress") {
    // On connect the server tells the state of recent downloads: a queued one stays queued.
    if (row.dataset.state !== "queued" || event.bytes_per_s > 0) setState(row, "running");
    bar.max = event.total;
    bar.value = event.bytes;
    const parts = [`${size(event.bytes)} of ${size(event.total)}`, `${event.percent} %`];
    if (event.bytes_per_s > 0) parts.push(`${size(event.bytes_per_s)}/s`);
    if (event.eta_s !== null && event.bytes < event.total) parts.push(`${duration(event.eta_s)} left`);
    row.querySelector('[data-field="progress"]').textContent = parts.join(" · ");
    note.textContent = "";
  } else if (event.type === "download.done") {
    const news = row.dataset.state !== "done";
    setState(row, "done");
    bar.value = bar.max;
    note.textContent = `Ready as the model ${event.name}.`;
    if (news) flash(`${event.name} is ready; reload the page to see it among the models.`, "success");
  } else if (event.type === "download.failed") {
    setState(row, "failed");
    note.textContent = event.error;
  } else if (event.type === "download.cancelled") {
    setState(row, "cancelled");
    note.textContent = `Cancelled; ${size(event.bytes)} kept on disk for a resume.`;
  }
}

// Reconnects with backoff and pings as the chat page's socket does (static/wizweb/socket.js).
const socket = new LiveSocket("/ws/models/", {
  onFrame(event) {
    if (event.type === "worker.status") showWorker(event);
    else if (event.type.startsWith("worker.")) showWorkerModel(event);
    else if (event.type.startsWith("download.")) showDownload(event);
    else if (event.type === "error") flash(event.message, "error");
  },
  onOpen() {
    document.body.dataset.connected = "true";
  },
  onClose() {
    document.body.dataset.connected = "false";
  },
});

// Cancel through the socket when it is open (the page stays as it is); otherwise the form posts.
for (const form of document.querySelectorAll(".cancel-form")) {
  form.addEventListener("submit", (event) => {
    if (!socket.send({ type: "cancel", download: Number(form.dataset.download) })) return;
    event.preventDefault();
    form.querySelector("button").disabled = true;
  });
}

// Load and Unload through fetch while the socket is open: the page stays, so it hears how the
// job ends on the worker (worker.loaded, worker.unloaded, worker.load_failed). Without the
// socket the form posts and the page comes back with the server's sentence.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest(".load-form, .unload-form");
  if (!form || !socket.isOpen) return;
  event.preventDefault();
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  let response;
  try {
    response = await fetch(form.getAttribute("action"), {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
  } catch {
    flash("The server cannot be reached; check the connection and try again.", "error");
    button.disabled = false;
    return;
  }
  button.disabled = false;
  try {
    const reply = await response.json();
    flash(reply.message, reply.level);
  } catch {
    // Not our JSON: a session that expired (the login page) or a server error.
    flash(`The server answered ${response.status}; reload the page and try again.`, "error");
  }
});

for (const form of document.querySelectorAll(".delete-form")) {
  form.addEventListener("submit", (event) => {
    if (!confirm(`Delete ${form.dataset.name} and its file?`)) event.preventDefault();
  });
}

setInterval(tickHeartbeats, 1000);
socket.connect();

// A Hub search or repo takes a moment (up to a few seconds when the box is offline): say so.
for (const form of document.querySelectorAll(".hub-forms form")) {
  form.addEventListener("submit", () => {
    const button = form.querySelector("button");
    button.textContent = "Searching…";
    form.setAttribute("aria-busy", "true");
    document.querySelector("#hub").classList.add("busy");
  });
}
