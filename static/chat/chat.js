// The chat page: one WebSocket (/ws/chat/, see docs/protocol.md). Answers are rendered as
// sanitised markdown (markdown.js, docs/frontend.md); what the user typed is shown as the plain
// text it is, with textContent.

import { renderMarkdown } from "./markdown.js";
import { currentModel, currentOptions, settingsAttach } from "./settings.js";
import { sidebarShow } from "./sidebar.js";

const pageData = JSON.parse(document.getElementById("page-data").textContent);
const list = document.getElementById("messages");
const form = document.getElementById("composer");
const promptBox = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const statusLine = document.getElementById("status");

let conversation = pageData.conversation;
let socket = null;
let retryDelay = 500;
const views = new Map(); // message id -> {item, content, meta, seq, text}
const pending = new Map(); // client_id -> placeholder view
const stale = new Set(); // streaming views whose text changed since they were last rendered
let frameRequested = false;
let quietUntil = 0; // no streaming render before this time (performance.now())

function messageView(role, id) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  if (id) item.dataset.message = id;
  const content = document.createElement("div");
  content.className = "content";
  if (role === "assistant") content.classList.add("markdown");
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(content, meta);
  list.append(item);
  const view = { item, content, meta, seq: 0, text: "" };
  if (id) views.set(id, view);
  return view;
}

function scrollToEnd() {
  list.scrollTop = list.scrollHeight;
}

function isNearEnd() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
}

// Chunks can arrive faster than the screen repaints (several answers at once, each chunk every
// 40 ms), and each render parses its whole answer. So a chunk only marks its message stale, and
// the stale messages (only those) are rendered at most once per frame.
function renderSoon(view) {
  stale.add(view);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(renderStale);
}

function renderStale(now) {
  // A very long answer takes longer to render (tens of ms at 50 KB); leave the page three times
  // that long between renders to scroll, select and type, instead of rendering every frame.
  if (now < quietUntil) {
    requestAnimationFrame(renderStale);
    return;
  }
  frameRequested = false;
  const started = performance.now();
  // Follow the answer only if the reader has not scrolled up to read something else.
  const follow = isNearEnd();
  for (const view of stale) renderMarkdown(view.content, view.text);
  stale.clear();
  if (follow) scrollToEnd();
  const finished = performance.now();
  quietUntil = finished + 3 * (finished - started);
}

function describe(message) {
  const parts = [];
  if (message.model) parts.push(message.model);
  if (message.usage) parts.push(`${message.usage.completion_tokens} tokens`);
  const t = message.timings || {};
  if (t.tokens_per_s) parts.push(`${t.tokens_per_s.toFixed(1)} tok/s`);
  if (t.ttft_ms !== undefined) parts.push(`first token ${(t.ttft_ms / 1000).toFixed(2)} s`);
  if (message.finish_reason && message.finish_reason !== "stop") parts.push(message.finish_reason);
  return parts.join(" · ");
}

function showFinished(view, frame) {
  const calls = (frame.tool_calls || []).map((c) => `→ ${c.function.name}(${c.function.arguments})`);
  // At once, not on the next frame: a finished answer must read as its saved content now.
  stale.delete(view);
  view.text = frame.content || "";
  if (calls.length) {
    view.content.classList.replace("markdown", "tool-calls");
    view.content.textContent = calls.join("\n");
  } else {
    renderMarkdown(view.content, view.text);
  }
  view.meta.textContent = describe({ ...frame, model: frame.model || view.model });
  view.item.classList.remove("streaming");
  if (frame.finish_reason === "error") {
    view.item.classList.add("failed");
    view.meta.textContent = frame.error || "The answer failed.";
  }
  view.item.dataset.state = frame.finish_reason === "error" ? "failed" : "done";
}

function render(messages) {
  for (const message of messages) {
    const view = messageView(message.role, message.id);
    if (message.role !== "assistant") {
      view.content.textContent = message.content;
      continue;
    }
    if (message.state === "queued" || message.state === "running") {
      view.item.classList.add("streaming");
      view.meta.textContent = message.state === "queued" ? "Waiting in the queue…" : "Answering…";
      view.content.textContent = "";
    } else {
      showFinished(view, message);
    }
  }
  scrollToEnd();
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    statusLine.textContent = "Not connected to the server; trying again…";
    return false;
  }
  socket.send(JSON.stringify(frame));
  return true;
}

const handlers = {
  accepted(frame) {
    const view = pending.get(frame.client_id);
    pending.delete(frame.client_id);
    if (!view) return;
    view.item.dataset.message = frame.message;
    views.set(frame.message, view);
    view.meta.textContent =
      frame.queue_position > 1 ? `Waiting in the queue (position ${frame.queue_position})…` : "Waiting…";
    if (conversation !== frame.conversation) {
      conversation = frame.conversation;
      settingsAttach(conversation);
      history.replaceState(null, "", `/c/${conversation}/`);
    }
  },
  conversation(frame) {
    sidebarShow(frame.conversation, frame.title, { current: frame.conversation === conversation });
  },
  queued(frame) {
    const view = views.get(frame.message);
    if (view) view.meta.textContent = `Waiting in the queue (position ${frame.position})…`;
  },
  started(frame) {
    const view = views.get(frame.message);
    if (!view) return;
    view.model = frame.model;
    view.meta.textContent = `${frame.model} is answering…`;
  },
  chunk(frame) {
    const view = views.get(frame.message);
    if (!view || frame.seq <= view.seq) return;
    view.seq = frame.seq;
    view.text += frame.text;
    renderSoon(view);
  },
  done(frame) {
    const view = views.get(frame.message);
    if (view) showFinished(view, frame);
    sendButton.disabled = false;
    scrollToEnd();
  },
  error(frame) {
    statusLine.textContent = frame.message;
    const view = pending.get(frame.client_id);
    if (view) {
      pending.delete(frame.client_id);
      view.item.remove();
      sendButton.disabled = false;
    }
  },
  pong() {},
};

function resumeUnfinished() {
  for (const [id, view] of views) {
    if (view.item.classList.contains("streaming")) {
      send({ type: "subscribe", message: id, after: view.seq });
    }
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/chat/`);
  socket.addEventListener("open", () => {
    retryDelay = 500;
    statusLine.textContent = "";
    document.body.dataset.connected = "true";
    resumeUnfinished();
  });
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    handlers[frame.type]?.(frame);
  });
  socket.addEventListener("close", () => {
    document.body.dataset.connected = "false";
    statusLine.textContent = "Connection lost; reconnecting…";
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  });
}

function submit() {
  const content = promptBox.value;
  if (!content.trim()) return;
  const clientId = crypto.randomUUID ? crypto.randomUUID() : String(Date.now() + Math.random());
  const ok = send({ type: "prompt", content, conversation, options: currentOptions(), client_id: clientId });
  if (!ok) return;
  statusLine.textContent = "";
  const userView = messageView("user");
  userView.content.textContent = content;
  const view = messageView("assistant");
  view.item.classList.add("streaming");
  view.meta.textContent = "Sending…";
  pending.set(clientId, view);
  promptBox.value = "";
  sendButton.disabled = true;
  scrollToEnd();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
promptBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});

render(pageData.messages);
connect();
