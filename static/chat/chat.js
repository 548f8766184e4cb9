// The chat page: one WebSocket (/ws/chat/, see docs/protocol.md). Answers are rendered as
// sanitised markdown (markdown.js, docs/frontend.md); what the user typed is shown as the plain
// text it is, with textContent.
//
// A conversation is a tree: regenerating an answer or editing a prompt adds a sibling beside the
// old message (same parent). The page shows one branch, from the first message down, choosing at
// each fork the version the user picked (‹ 2/3 ›) or else the newest one.

import { copyText, renderMarkdown } from "./markdown.js";
import { currentModel, currentOptions, settingsAttach } from "./settings.js";
import { sidebarRaise, sidebarRemove, sidebarShow } from "./sidebar.js";
import { thinkingChunk, thinkingEnd, thinkingShow } from "./thinking.js";
import "./shortcuts.js";
import { toast } from "./toast.js";

const pageData = JSON.parse(document.getElementById("page-data").textContent);
const list = document.getElementById("messages");
const form = document.getElementById("composer");
const promptBox = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const statusLine = document.getElementById("status");
const queuedStrip = document.getElementById("queued-prompt");
const queuedText = document.getElementById("queued-text");
const offlineBanner = document.getElementById("offline");
const contextMeter = document.getElementById("context-meter");
const contextText = document.getElementById("context-text");
const contextWarning = document.getElementById("context-warning");
const announcer = document.getElementById("announcer");
const toBottom = document.getElementById("to-bottom");
const emptyState = document.getElementById("empty-state");
// A touch keyboard has no Shift+Enter: there Enter makes a new line and Send sends.
const touchTyping = matchMedia("(pointer: coarse)").matches;

// A prompt's size before the model's tokenizer has seen it: about 3.5 characters a token for
// English text in the tokenizers of common models; the meter shows real counts once answered.
const CHARS_PER_TOKEN = 3.5;
// What a chat template adds around one turn (role markers), in tokens, roughly.
const TURN_OVERHEAD = 8;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;
// A prompt longer than this is shown folded (about 16 lines) with "Show all": a pasted 32 KB
// log made the conversation 7,000 px tall.
const FOLD_LINES = 16;
const FOLD_CHARS = 1200;

let conversation = pageData.conversation;
// A prompt sent while an answer was being written, sent when that answer ends (one at most).
let queuedPrompt = null;
let socket = null;
let retryDelay = 500;
let retryTimer = null;
let pingTimer = null;
let pongDeadline = null;

const nodes = new Map(); // message id -> the message as the API shows it (docs/api.md)
const children = new Map(); // parent id ("" for the first turns) -> child ids, oldest first
const chosen = new Map(); // parent id ("" for the first turns) -> the child shown
const views = new Map(); // message id -> {item, content, meta, tools, seq, text}
const pending = new Map(); // client_id -> what was asked, until `accepted`
const stale = new Set(); // streaming views whose text changed since they were last rendered
let frameRequested = false;
let quietUntil = 0; // no streaming render before this time (performance.now())

const key = (parent) => parent || "";
const isUnfinished = (message) => message.state === "queued" || message.state === "running";
const STATE_OF = { stop: "done", length: "done", tool_calls: "done", aborted: "aborted", error: "failed" };

function addNode(message) {
  nodes.set(message.id, message);
  const siblings = children.get(key(message.parent)) || [];
  if (!siblings.includes(message.id)) siblings.push(message.id);
  children.set(key(message.parent), siblings);
}

// The branch shown: from the first turn down, at each fork the child the reader chose, or else
// the one leading to the newest message, so a reload shows the branch last written to.
function shownPath() {
  // Where the newest message under each message is in `nodes` (which holds them oldest first);
  // children come after their parents there, so one backward pass finds them all.
  const ids = [...nodes.keys()];
  const newest = new Map(ids.map((id, index) => [id, index]));
  for (let i = ids.length - 1; i >= 0; i--) {
    const parent = nodes.get(ids[i]).parent;
    if (parent && newest.has(parent)) newest.set(parent, Math.max(newest.get(parent), newest.get(ids[i])));
  }
  const path = [];
  let at = "";
  for (;;) {
    const forks = children.get(at);
    if (!forks || !forks.length) return path;
    let id = chosen.get(at);
    if (!forks.includes(id)) {
      id = forks.reduce((best, child) => (newest.get(child) > newest.get(best) ? child : best));
    }
    path.push(id);
    at = id;
  }
}

function button(label, className, onClick, ariaLabel) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = label;
  if (ariaLabel) element.setAttribute("aria-label", ariaLabel);
  element.addEventListener("click", onClick);
  return element;
}

// The message actions are icons (SVG paths on a 24-unit grid), named by aria-label and title.
const ICONS = {
  copy: "M9 9h10v11H9zM5 15V4h10",
  regenerate: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
  edit: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
};

function iconButton(icon, className, onClick, label) {
  const element = button("", className, onClick, label);
  element.title = label;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[icon]);
  svg.append(path);
  element.append(svg);
  return element;
}

// Copy a message as its markdown source, as written (not the rendered text).
async function copyMessage(id) {
  const message = nodes.get(id);
  const text = message.role === "assistant" ? viewFor(id).text || message.content : message.content;
  const copied = await copyText(text);
  const what = message.role === "user" ? "prompt" : "answer";
  toast(copied ? `Copied the ${what}.` : "Could not copy: this browser refused the clipboard.", { error: !copied });
}

function messageView(role) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const content = document.createElement("div");
  content.className = "content";
  if (role === "assistant") content.classList.add("markdown");
  const meta = document.createElement("div");
  meta.className = "meta";
  const tools = document.createElement("div");
  tools.className = "message-tools";
  item.append(content, meta, tools);
  return { item, content, meta, tools, seq: 0, text: "" };
}

function isLong(text) {
  return text.length > FOLD_CHARS || text.split("\n").length > FOLD_LINES;
}

function showPrompt(view, text) {
  view.content.textContent = text;
  view.item.classList.toggle("folded", isLong(text));
}

// The view of a saved message, made the first time it is needed.
function viewFor(id) {
  let view = views.get(id);
  if (view) return view;
  const message = nodes.get(id);
  view = messageView(message.role);
  view.item.dataset.message = id;
  views.set(id, view);
  if (message.role !== "assistant") {
    showPrompt(view, message.content);
  } else if (isUnfinished(message)) {
    view.item.classList.add("streaming");
    view.item.dataset.state = message.state;
    view.meta.textContent = message.state === "queued" ? "Waiting in the queue…" : "Answering…";
  } else {
    showFinished(view, message);
  }
  return view;
}

// An answer that is a JSON document (JSON mode) is shown as code, its indentation kept; read as
// markdown its lines ran together into one paragraph. While it streams it does not parse yet,
// so an answer that starts with "{" is taken for JSON.
function isJsonAnswer(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) return true;
  if (!trimmed.startsWith("[")) return false;
  try {
    JSON.parse(trimmed);
    return true;
  } catch {
    return false;
  }
}

function renderAnswer(view) {
  if (!isJsonAnswer(view.text)) {
    renderMarkdown(view.content, view.text);
    return;
  }
  // A fence longer than any run of backticks inside, so the JSON cannot close it.
  const longest = Math.max(2, ...(view.text.match(/`+/g) || []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  renderMarkdown(view.content, `${fence}json\n${view.text.trim()}\n${fence}`);
}

function scrollToEnd() {
  list.scrollTop = list.scrollHeight;
  showToBottom();
}

function isNearEnd() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
}

// The ↓ button shows while the newest message is out of view (the reader scrolled up, or an
// answer grew below the screen).
function showToBottom() {
  toBottom.hidden = isNearEnd();
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
  for (const view of stale) renderAnswer(view);
  stale.clear();
  if (follow) scrollToEnd();
  else showToBottom();
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
  if (message.finish_reason === "aborted") parts.push("stopped");
  else if (message.finish_reason === "length") parts.push("cut off at the token limit");
  // Only a count says something was left out; {} (older saved answers) or null says nothing was.
  if (message.trimmed?.turns) {
    const turns = message.trimmed.turns;
    parts.push(`${turns} earlier message${turns === 1 ? "" : "s"} left out to fit the context`);
  }
  return parts.join(" · ");
}

function showFinished(view, message) {
  const calls = (message.tool_calls || []).map((c) => `→ ${c.function.name}(${c.function.arguments})`);
  // At once, not on the next frame: a finished answer must read as its saved content now.
  stale.delete(view);
  view.text = message.content || "";
  if (calls.length) {
    view.content.classList.replace("markdown", "tool-calls");
    view.content.textContent = calls.join("\n");
  } else {
    renderAnswer(view);
  }
  thinkingShow(view, message);
  view.item.classList.remove("streaming");
  const failed = message.finish_reason === "error" || message.state === "failed";
  view.item.classList.toggle("failed", failed);
  view.meta.textContent = failed ? message.error || "The answer failed." : describe(message);
  view.item.dataset.state = failed ? "failed" : message.finish_reason === "aborted" ? "aborted" : "done";
}

// The ‹ 2/3 › switch of a message that has other versions, and what can be done with it.
function showTools(id) {
  const message = nodes.get(id);
  const view = viewFor(id);
  const siblings = children.get(key(message.parent)) || [id];
  const tools = [];
  if (siblings.length > 1) {
    const index = siblings.indexOf(id);
    const versions = document.createElement("span");
    versions.className = "versions";
    const label = message.role === "user" ? "prompt" : "answer";
    const previous = button("‹", "version-previous", () => choose(siblings[index - 1]), `Previous ${label}`);
    const next = button("›", "version-next", () => choose(siblings[index + 1]), `Next ${label}`);
    previous.disabled = index === 0;
    next.disabled = index === siblings.length - 1;
    const count = document.createElement("span");
    count.className = "version-count";
    count.textContent = `${index + 1}/${siblings.length}`;
    versions.append(previous, count, next);
    tools.push(versions);
  }
  const busy = streamingOnPath() !== null;
  if (message.role === "user" && isLong(message.content)) {
    const folded = view.item.classList.contains("folded");
    const lines = message.content.split("\n").length;
    const fold = button(folded ? `Show all (${lines.toLocaleString()} lines)` : "Show less", "fold", () => {
      view.item.classList.toggle("folded");
      showTools(id);
    });
    fold.setAttribute("aria-expanded", String(!folded));
    tools.push(fold);
  }
  if (message.role === "user") {
    tools.push(iconButton("copy", "copy-message", () => copyMessage(id), "Copy this prompt"));
    const edit = iconButton("edit", "edit", () => startEdit(id), "Edit this prompt and send it again");
    edit.disabled = busy;
    tools.push(edit);
  } else if (message.role === "assistant" && !isUnfinished(message)) {
    tools.push(iconButton("copy", "copy-message", () => copyMessage(id), "Copy this answer as markdown"));
    const again = iconButton("regenerate", "regenerate", () => regenerate(id), "Write this answer again");
    again.disabled = busy;
    tools.push(again);
  }
  view.tools.replaceChildren(...tools);
}

function choose(id) {
  chosen.set(key(nodes.get(id).parent), id);
  renderThread();
}

// Lay out the branch shown. Only on changes of structure (a new message, another version):
// the views are kept, so a streaming answer goes on streaming wherever it is shown.
function renderThread({ follow = true } = {}) {
  const path = shownPath();
  const items = path.map((id) => viewFor(id).item);
  for (const view of pending.values()) items.push(...view.placeholders);
  const same = items.length === list.children.length && items.every((item, i) => list.children[i] === item);
  if (!same) list.replaceChildren(...items);
  emptyState.hidden = items.length > 0;
  for (const id of path) showTools(id);
  showComposerState();
  showContext();
  if (follow) scrollToEnd();
}

function streamingOnPath() {
  const path = shownPath();
  const last = path[path.length - 1];
  if (last && nodes.get(last).role === "assistant" && isUnfinished(nodes.get(last))) return last;
  return null;
}

function showComposerState() {
  const streaming = streamingOnPath();
  const waiting = [...pending.values()].some((p) => p.kind === "prompt");
  // While an answer is written, Send (or Enter) queues the next prompt for when it ends.
  sendButton.disabled = waiting;
  sendButton.title = streaming === null ? "" : "Queued: sent when the answer ends";
  stopButton.hidden = streaming === null;
  fitPromptBox(); // a prompt put back in the box (not sent) is shown whole
}

function estimateTokens(text) {
  return text ? Math.ceil(text.length / CHARS_PER_TOKEN) + TURN_OVERHEAD : 0;
}

// The tokens this conversation uses now: the real count of its last answer on this branch (the
// whole prompt the model read plus the answer), or an estimate when nothing was answered yet.
function usedTokens() {
  const path = shownPath();
  let used = null;
  let after = 0;
  for (let i = path.length - 1; i >= 0; i--) {
    const message = nodes.get(path[i]);
    if (message.role === "assistant" && message.usage) {
      used = message.usage.total_tokens;
      break;
    }
    after += estimateTokens(message.content);
  }
  if (used === null) return { tokens: after + estimateTokens(currentOptions().system_prompt || ""), exact: false };
  return { tokens: used + after, exact: after === 0 };
}

// The context meter, and a warning before a prompt would not fit (docs/frontend.md): the
// answer needs room too, as the engine reserves it (the smaller of max_tokens and a quarter of
// the window).
function showContext() {
  const model = currentModel();
  const window = model?.context_window || 0;
  contextMeter.parentElement.hidden = !window;
  if (!window) return;
  const used = usedTokens();
  const room = Math.min(currentOptions().max_tokens || pageData.default_max_tokens, Math.floor(window / 4));
  const prompt = estimateTokens(promptBox.value);
  contextMeter.max = window;
  contextMeter.value = Math.min(used.tokens, window);
  contextText.textContent =
    `${used.exact ? "" : "about "}${used.tokens.toLocaleString()} of ${window.toLocaleString()} tokens`;
  let warning = "";
  let level = "";
  if (prompt + room > window) {
    warning = `This message is about ${prompt.toLocaleString()} tokens and ${model.name} reads ${window.toLocaleString()} at most, with room for its answer; shorten it.`;
    level = "error";
  } else if (prompt && used.tokens + prompt + room > window) {
    warning = "This conversation is nearly as long as the model can read: the oldest messages will be left out of what it sees (the system prompt stays). Start a new chat to keep everything in view.";
    level = "warning";
  }
  contextWarning.textContent = warning;
  contextWarning.dataset.level = level;
}

function send(frame) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    statusLine.textContent = "Not connected to the server; your message was not sent. It is still in the box.";
    return false;
  }
  socket.send(JSON.stringify(frame));
  return true;
}

function clientId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

function regenerate(id) {
  const id_ = clientId();
  if (!send({ type: "regenerate", message: id, options: currentOptions(), client_id: id_ })) return;
  pending.set(id_, { kind: "regenerate", placeholders: [] });
  statusLine.textContent = "";
  renderThread();
}

function startEdit(id) {
  const view = viewFor(id);
  const message = nodes.get(id);
  const editor = document.createElement("form");
  editor.className = "edit-form";
  const label = document.createElement("label");
  label.className = "visually-hidden";
  label.textContent = "Edited prompt";
  const box = document.createElement("textarea");
  box.id = `edit-${id}`;
  label.htmlFor = box.id;
  box.value = message.content;
  box.rows = Math.min(12, message.content.split("\n").length + 1);
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Send";
  const cancel = button("Cancel", "cancel-edit", () => renderThread({ follow: false }));
  editor.append(label, box, save, cancel);
  editor.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = box.value;
    if (!content.trim()) return;
    const id_ = clientId();
    const frame = { type: "edit", message: id, content, options: currentOptions(), client_id: id_ };
    if (!send(frame)) return;
    pending.set(id_, { kind: "edit", parent: message.parent, content, placeholders: [] });
    statusLine.textContent = "";
    renderThread();
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touchTyping) {
      event.preventDefault();
      editor.requestSubmit();
    } else if (event.key === "Escape") {
      renderThread({ follow: false });
    }
  });
  view.tools.replaceChildren(editor);
  box.focus();
}

function finishedFrame(message, frame) {
  Object.assign(message, {
    content: frame.content || "",
    reasoning: frame.reasoning || "",
    note: frame.note || "",
    state: STATE_OF[frame.finish_reason] || "done",
    finish_reason: frame.finish_reason,
    usage: frame.usage,
    timings: frame.timings,
    tool_calls: frame.tool_calls || [],
    trimmed: frame.trimmed || null,
    error: frame.error || "",
    model: frame.model || message.model,
  });
}

const handlers = {
  accepted(frame) {
    const asked = pending.get(frame.client_id);
    pending.delete(frame.client_id);
    if (!asked) return;
    if (conversation !== frame.conversation) {
      conversation = frame.conversation;
      settingsAttach(conversation);
      history.replaceState(null, "", `/c/${conversation}/`);
    }
    sidebarRaise(conversation);
    if (asked.kind !== "regenerate") {
      addNode({ id: frame.user_message, role: "user", parent: asked.parent, content: asked.content, state: "done" });
      chosen.set(key(asked.parent), frame.user_message);
    }
    addNode({ id: frame.message, role: "assistant", parent: frame.user_message, content: "", state: "queued" });
    chosen.set(frame.user_message, frame.message);
    if (asked.kind === "prompt") {
      const [userView, answerView] = asked.views;
      userView.item.dataset.message = frame.user_message;
      answerView.item.dataset.message = frame.message;
      views.set(frame.user_message, userView);
      views.set(frame.message, answerView);
    }
    const view = viewFor(frame.message);
    view.meta.textContent =
      frame.queue_position > 1 ? `Waiting in the queue (position ${frame.queue_position})…` : "Waiting…";
    renderThread();
  },
  // A conversation created, renamed, or given its title by the model after its first answer.
  conversation(frame) {
    const current = frame.conversation === conversation;
    sidebarShow(frame.conversation, frame.title, { current });
    if (current) document.getElementById("chat-heading").textContent = frame.title;
  },
  conversation_deleted(frame) {
    sidebarRemove(frame.conversation);
    // Deleted on another page (or this one): its address is a 404 now, so leave for a new chat.
    if (frame.conversation === conversation) location.assign("/");
  },
  queued(frame) {
    const view = views.get(frame.message);
    if (view) view.meta.textContent = `Waiting in the queue (${queuePlace(frame)})…`;
  },
  started(frame) {
    const message = nodes.get(frame.message);
    if (!message) return;
    message.state = "running";
    message.model = frame.model;
    viewFor(frame.message).item.dataset.state = "running";
    viewFor(frame.message).meta.textContent = `${frame.model} is answering…`;
  },
  // A long prompt being read (prefill): how far, until its answer's first text.
  progress(frame) {
    const message = nodes.get(frame.message);
    const view = views.get(frame.message);
    if (!message || !view || view.seq > 0 || frame.done < (view.readDone || 0)) return;
    message.state = "running";
    view.item.dataset.state = "running";
    view.readDone = frame.done;
    view.meta.textContent = `Reading the prompt… ${frame.done.toLocaleString()} of ${frame.total.toLocaleString()} tokens`;
  },
  chunk(frame) {
    const message = nodes.get(frame.message);
    if (!message) return;
    const view = viewFor(frame.message);
    if (frame.seq <= view.seq) return;
    if (message.state === "queued") {
      message.state = "running";
      view.item.dataset.state = "running";
      view.meta.textContent = "Answering…";
    } else if (view.readDone !== undefined) {
      view.meta.textContent = `${message.model || "The model"} is answering…`; // read: it writes
    }
    view.readDone = undefined;
    view.seq = frame.seq;
    if (frame.channel === "reasoning") return thinkingChunk(view, frame.text);
    thinkingEnd(view);
    view.text += frame.text;
    renderSoon(view);
  },
  done(frame) {
    const message = nodes.get(frame.message);
    if (!message) return;
    finishedFrame(message, frame);
    showFinished(viewFor(frame.message), message);
    // The list is not a live region (it would re-read a streaming answer at every chunk): the
    // finished answer on the branch shown is read once.
    if (shownPath().includes(frame.message)) {
      announcer.textContent = viewFor(frame.message).content.innerText || viewFor(frame.message).meta.textContent;
    }
    renderThread({ follow: isNearEnd() });
    sendQueued();
  },
  error(frame) {
    statusLine.textContent = frame.message;
    const asked = pending.get(frame.client_id);
    if (asked) {
      pending.delete(frame.client_id);
      if (asked.kind === "prompt" && !promptBox.value) promptBox.value = asked.content;
      renderThread();
    }
  },
  pong() {},
};

function resumeUnfinished() {
  for (const [id, message] of nodes) {
    if (message.role === "assistant" && isUnfinished(message)) {
      send({ type: "subscribe", message: id, after: views.get(id)?.seq || 0 });
    }
  }
}

function showOffline(offline) {
  offlineBanner.hidden = !offline;
  document.body.dataset.connected = offline ? "false" : "true";
}

function keepAlive() {
  clearInterval(pingTimer);
  // A phone that leaves the Wi-Fi may never see the socket close; a ping unanswered says so.
  pingTimer = setInterval(() => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "ping" }));
    pongDeadline ??= setTimeout(() => socket?.close(), PONG_WITHIN_MS);
  }, PING_EVERY_MS);
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const opened = new WebSocket(`${scheme}://${location.host}/ws/chat/`);
  socket = opened;
  opened.addEventListener("open", () => {
    retryDelay = 500;
    statusLine.textContent = "";
    showOffline(false);
    keepAlive();
    resumeUnfinished();
  });
  opened.addEventListener("message", (event) => {
    clearTimeout(pongDeadline);
    pongDeadline = null;
    const frame = JSON.parse(event.data);
    handlers[frame.type]?.(frame);
  });
  opened.addEventListener("close", () => {
    if (socket !== opened) return;
    showOffline(true);
    clearInterval(pingTimer);
    clearTimeout(pongDeadline);
    pongDeadline = null;
    // What was asked but not accepted may be lost with the socket; give it back to the writer.
    for (const [id, asked] of pending) {
      if (asked.kind === "prompt" && !promptBox.value) {
        promptBox.value = asked.content;
        statusLine.textContent = "The connection dropped as your message was sent; check the conversation after it is back, and send it again if it is missing.";
      }
      pending.delete(id);
    }
    renderThread({ follow: false });
    // Back off, with a little jitter so that a restarted server is not met by every page at once.
    retryTimer = setTimeout(connect, retryDelay + Math.random() * 250);
    retryDelay = Math.min(retryDelay * 2, 15000);
  });
}

function reconnectNow() {
  if (socket && socket.readyState <= WebSocket.OPEN) return; // connecting or open
  retryDelay = 500;
  connect();
}

function showNotice(text, action = null) {
  statusLine.replaceChildren(text);
  if (action) statusLine.append(" ", action);
}

// "position 3, about 40 s": the place, and the server's estimate from the measured speed.
function queuePlace(frame) {
  const place = `position ${frame.position}`;
  const eta = frame.eta_s;
  if (eta == null) return place;
  const wait = eta < 90 ? `${eta} s` : `${Math.round(eta / 60)} min`;
  return `${place}, about ${wait}`;
}

function showQueued() {
  queuedStrip.hidden = queuedPrompt === null;
  queuedText.textContent = queuedPrompt === null ? "" : `Queued, sent when the answer ends: “${queuedPrompt}”`;
}

// Cancelling gives the text back to the box, unless something new is being written there.
function cancelQueued() {
  if (queuedPrompt === null) return;
  if (!promptBox.value.trim()) {
    promptBox.value = queuedPrompt;
    fitPromptBox();
    showContext();
  }
  queuedPrompt = null;
  showQueued();
  statusLine.textContent = "";
  promptBox.focus();
}

function sendQueued() {
  if (queuedPrompt === null || streamingOnPath() !== null) return;
  const content = queuedPrompt;
  queuedPrompt = null;
  showQueued();
  submit({ anyway: true, queued: content });
}

function submit({ anyway = false, queued = null } = {}) {
  const content = queued ?? promptBox.value;
  if (!content.trim()) return;
  // The meter's estimate says it cannot fit: the server would refuse it after a long read, or
  // the model would read it for minutes while others wait. Sending it is still possible, since
  // the estimate is only an estimate.
  if (!anyway && contextWarning.dataset.level === "error") {
    const sendAnyway = button("Send anyway", "link send-anyway", () => submit({ anyway: true }));
    showNotice(`Not sent: ${contextWarning.textContent}`, sendAnyway);
    return;
  }
  if (streamingOnPath() !== null) {
    // One prompt waits at a time: a second would have to go under an answer not written yet.
    if (queuedPrompt !== null) {
      showNotice("A prompt is already queued for when this answer ends: cancel it first, or press Stop.");
      return;
    }
    queuedPrompt = content;
    showQueued();
    statusLine.textContent = "";
    promptBox.value = "";
    fitPromptBox();
    showContext();
    return;
  }
  if (sendButton.disabled) {
    if (queued !== null) cancelQueued();
    return;
  }
  const id = clientId();
  const path = shownPath();
  const parent = path[path.length - 1] || null;
  const frame = { type: "prompt", content, conversation, parent, options: currentOptions(), client_id: id };
  if (!send(frame)) {
    if (queued !== null && !promptBox.value.trim()) promptBox.value = queued;
    return;
  }
  statusLine.textContent = "";
  const userView = messageView("user");
  showPrompt(userView, content);
  const answerView = messageView("assistant");
  answerView.item.classList.add("streaming");
  answerView.item.dataset.state = "queued";
  answerView.meta.textContent = "Sending…";
  pending.set(id, { kind: "prompt", parent, content, views: [userView, answerView], placeholders: [userView.item, answerView.item] });
  if (queued === null) {
    promptBox.value = "";
    fitPromptBox();
  }
  renderThread();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
if (touchTyping) promptBox.placeholder = promptBox.dataset.touchPlaceholder;
promptBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touchTyping) {
    event.preventDefault();
    submit();
  }
});
// The box grows with what is typed, up to 40 % of the window, then scrolls.
function fitPromptBox() {
  promptBox.style.height = "auto";
  const most = Math.round(innerHeight * 0.4);
  promptBox.style.height = `${Math.min(promptBox.scrollHeight + 2, most)}px`;
  promptBox.style.overflowY = promptBox.scrollHeight + 2 > most ? "auto" : "hidden";
}
promptBox.addEventListener("input", () => {
  fitPromptBox();
  showContext();
});
// Esc in the message box stops the answer being written, as the Stop button does.
promptBox.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !event.shiftKey && !stopButton.hidden) {
    event.preventDefault();
    stopButton.click();
  }
});
stopButton.addEventListener("click", () => {
  const id = streamingOnPath();
  if (id) send({ type: "abort", message: id });
});
document.getElementById("reconnect").addEventListener("click", reconnectNow);
document.getElementById("queued-cancel").addEventListener("click", cancelQueued);
list.addEventListener("scroll", showToBottom, { passive: true });
for (const example of emptyState.querySelectorAll("button.example")) {
  example.addEventListener("click", () => {
    promptBox.value = example.textContent;
    promptBox.dispatchEvent(new Event("input"));
    promptBox.focus();
  });
}
addEventListener("resize", showToBottom);
toBottom.addEventListener("click", () => {
  list.scrollTo({ top: list.scrollHeight, behavior: "smooth" });
  promptBox.focus({ preventScroll: true });
});
window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});
document.addEventListener("wiz:settings", showContext);

for (const message of pageData.messages) addNode(message);
renderThread();
connect();
// Ready to type on arrival, unless the reader already went somewhere (or a touch keyboard would
// cover half the screen).
if (!touchTyping && document.activeElement === document.body) promptBox.focus({ preventScroll: true });
