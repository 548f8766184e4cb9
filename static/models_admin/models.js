// The model-admin page: live worker rows from /ws/models/ (worker.status events), and a
// confirmation before a model is deleted. Text only ever goes in with textContent.

const workersTable = document.querySelector("#workers tbody");

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
    const fields = ["name", "host", "models", "busy", "rss_bytes", "memory",
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
  set("rss_bytes", size(event.rss_bytes));
  set("memory", `${size(event.memory_used_bytes)} / ${size(event.memory_budget_bytes)}`);
  set("host_available_bytes", size(event.host_available_bytes));
  set("queue_depths", Object.entries(event.queue_depths).map(([q, n]) => `${q}: ${n}`).join(", "));
  const heartbeat = row.querySelector('[data-field="heartbeat"]');
  heartbeat.dataset.heartbeat = String(event.heartbeat);
}

function tickHeartbeats() {
  const now = Date.now() / 1000;
  for (const cell of workersTable.querySelectorAll('[data-field="heartbeat"]')) {
    const age = Math.max(0, now - Number(cell.dataset.heartbeat || now));
    cell.textContent = age < 3 ? "just now" : `${Math.round(age)} s ago`;
    cell.closest("tr").classList.toggle("stale", age > 6);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/models/`);
  socket.addEventListener("open", () => {
    document.body.dataset.connected = "true";
  });
  socket.addEventListener("message", (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "worker.status") showWorker(event);
  });
  socket.addEventListener("close", () => {
    document.body.dataset.connected = "false";
    setTimeout(connect, 2000);
  });
}

for (const form of document.querySelectorAll(".delete-form")) {
  form.addEventListener("submit", (event) => {
    if (!confirm(`Delete ${form.dataset.name} and its file?`)) event.preventDefault();
  });
}

setInterval(tickHeartbeats, 1000);
connect();
