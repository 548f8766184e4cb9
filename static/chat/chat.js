// The chat page's wiring: one live socket (/ws/chat/, see docs/protocol.md) whose frames change
// the conversation's tree (tree.js) and its views (messages.js), the composer that sends
// prompts, and the context meter (meter.js). docs/frontend.md has the module map.

import { attachmentsContext, attachmentsFrame, attachmentsFrameOf, attachmentsInit, attachmentsPending, attachmentsPutBack, attachmentsShow, attachmentsTake } from "./attachments.js";
import { showContext, contextRefusal } from "./meter.js";
import { button, messageView, MessageViews, showPrompt } from "./messages.js";
import { pageData } from "./page-data.js";
import { currentOptions, settingsAttach } from "./settings.js";
import "./shortcuts.js";
import { sidebarRaise, sidebarRemove, sidebarShow } from "./sidebar.js";
import { thinkingChunk, thinkingEnd } from "./thinking.js";
import { applyDone, isUnfinished, MessageTree, queuePlace } from "./tree.js";
import { LiveSocket } from "../wizweb/socket.js";

const list = document.getElementById("messages");
const form = document.getElementById("composer");
const promptBox = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const statusLine = document.getElementById("status");
const queuedStrip = document.getElementById("queued-prompt");
const queuedText = document.getElementById("queued-text");
const offlineBanner = document.getElementById("offline");
const announcer = document.getElementById("announcer");
const emptyState = document.getElementById("empty-state");
// A touch keyboard has no Shift+Enter: there Enter makes a new line and Send sends.
const touchTyping = matchMedia("(pointer: coarse)").matches;

const tree = new MessageTree();
const views = new MessageViews(tree, list, document.getElementById("to-bottom"));
const pending = new Map(); // client_id -> what was asked, until `accepted`
let conversation = pageData.conversation;
// A prompt sent while an answer was being written, sent when that answer ends (one at most).
let queuedPrompt = null;

const socket = new LiveSocket("/ws/chat/", {
  onFrame: (frame) => handlers[frame.type]?.(frame),
  onOpen() {
    statusLine.textContent = "";
    showOffline(false);
    resumeUnfinished();
  },
  onClose() {
    showOffline(true);
    // What was asked but not accepted may be lost with the socket; give it back to the writer.
    for (const [id, asked] of pending) {
      if (asked.kind === "prompt" && !promptBox.value) {
        promptBox.value = asked.content;
        statusLine.textContent = "The connection dropped as your message was sent; check the conversation after it is back, and send it again if it is missing.";
      }
      pending.delete(id);
    }
    renderThread({ follow: false });
  },
});

const messageActions = () => ({
  busy: tree.streamingOnPath() !== null,
  choose(id) {
    tree.choose(id);
    renderThread();
  },
  regenerate,
  edit: startEdit,
});

// Lay out the branch shown. Only on changes of structure (a new message, another version):
// the views are kept, so a streaming answer goes on streaming wherever it is shown.
function renderThread({ follow = true } = {}) {
  const path = tree.shownPath();
  const items = path.map((id) => views.viewFor(id).item);
  for (const asked of pending.values()) items.push(...asked.placeholders);
  const same = items.length === list.children.length && items.every((item, i) => list.children[i] === item);
  if (!same) list.replaceChildren(...items);
  emptyState.hidden = items.length > 0;
  const actions = messageActions();
  for (const id of path) views.showTools(id, actions);
  showComposerState();
  showMeter();
  if (follow) views.scrollToEnd();
}

// The meter counts what is typed and what is attached to it.
const showMeter = () => showContext(tree, promptBox.value, attachmentsContext);

function showComposerState() {
  const streaming = tree.streamingOnPath();
  const waiting = [...pending.values()].some((p) => p.kind === "prompt");
  // While an answer is written, Send (or Enter) queues the next prompt for when it ends.
  const files = attachmentsPending(); // a file still being sent or read: Send waits for it
  sendButton.disabled = waiting || Boolean(files);
  sendButton.title = files || (streaming === null ? "" : "Queued: sent when the answer ends");
  stopButton.hidden = streaming === null;
  fitPromptBox(); // a prompt put back in the box (not sent) is shown whole
}

function send(frame) {
  if (socket.send(frame)) return true;
  statusLine.textContent = "Not connected to the server; your message was not sent. It is still in the box.";
  return false;
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
  const view = views.viewFor(id);
  const message = tree.get(id);
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
    // An edited prompt keeps what was attached to it.
    const frame = { type: "edit", message: id, content, options: currentOptions(), client_id: id_, ...attachmentsFrameOf(message.attachments) };
    if (!send(frame)) return;
    pending.set(id_, { kind: "edit", parent: message.parent, content, attachments: message.attachments, placeholders: [] });
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
      tree.add({ id: frame.user_message, role: "user", parent: asked.parent, content: asked.content, state: "done", attachments: asked.attachments || [] });
      tree.chooseUnder(asked.parent, frame.user_message);
    }
    tree.add({ id: frame.message, role: "assistant", parent: frame.user_message, content: "", state: "queued" });
    tree.chooseUnder(frame.user_message, frame.message);
    if (asked.kind === "prompt") {
      const [userView, answerView] = asked.views;
      views.adopt(frame.user_message, userView);
      views.adopt(frame.message, answerView);
    }
    const view = views.viewFor(frame.message);
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
    const message = tree.get(frame.message);
    if (!message) return;
    message.state = "running";
    message.model = frame.model;
    const view = views.viewFor(frame.message);
    view.item.dataset.state = "running";
    view.meta.textContent = `${frame.model} is answering…`;
  },
  // A long prompt being read (prefill): how far, until its answer's first text.
  progress(frame) {
    const message = tree.get(frame.message);
    const view = views.get(frame.message);
    if (!message || !view || view.seq > 0 || frame.done < (view.readDone || 0)) return;
    message.state = "running";
    view.item.dataset.state = "running";
    view.readDone = frame.done;
    view.meta.textContent = `Reading the prompt… ${frame.done.toLocaleString()} of ${frame.total.toLocaleString()} tokens`;
  },
  chunk(frame) {
    const message = tree.get(frame.message);
    if (!message) return;
    const view = views.viewFor(frame.message);
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
    views.renderSoon(view);
  },
  done(frame) {
    const message = tree.get(frame.message);
    if (!message) return;
    applyDone(message, frame);
    const view = views.viewFor(frame.message);
    views.showFinished(view, message);
    // The list is not a live region (it would re-read a streaming answer at every chunk): the
    // finished answer on the branch shown is read once.
    if (tree.shownPath().includes(frame.message)) {
      announcer.textContent = view.content.innerText || view.meta.textContent;
    }
    renderThread({ follow: views.isNearEnd() });
    sendQueued();
  },
  error(frame) {
    statusLine.textContent = frame.message;
    const asked = pending.get(frame.client_id);
    if (asked) {
      pending.delete(frame.client_id);
      if (asked.kind === "prompt" && !promptBox.value) promptBox.value = asked.content;
      if (asked.kind === "prompt") attachmentsPutBack(asked.attachments);
      renderThread();
    }
  },
  pong() {},
};

function resumeUnfinished() {
  for (const [id, message] of tree.nodes) {
    if (message.role === "assistant" && isUnfinished(message)) {
      send({ type: "subscribe", message: id, after: views.get(id)?.seq || 0 });
    }
  }
}

function showOffline(offline) {
  offlineBanner.hidden = !offline;
  document.body.dataset.connected = offline ? "false" : "true";
}

function showNotice(text, action = null) {
  statusLine.replaceChildren(text);
  if (action) statusLine.append(" ", action);
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
    showMeter();
  }
  queuedPrompt = null;
  showQueued();
  statusLine.textContent = "";
  promptBox.focus();
}

function sendQueued() {
  if (queuedPrompt === null || tree.streamingOnPath() !== null) return;
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
  const refusal = contextRefusal();
  if (!anyway && refusal) {
    const sendAnyway = button("Send anyway", "link send-anyway", () => submit({ anyway: true }));
    showNotice(`Not sent: ${refusal}`, sendAnyway);
    return;
  }
  if (tree.streamingOnPath() !== null) {
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
    showMeter();
    return;
  }
  if (sendButton.disabled) {
    if (queued !== null) cancelQueued();
    return;
  }
  const id = clientId();
  const path = tree.shownPath();
  const parent = path[path.length - 1] || null;
  const frame = { type: "prompt", content, conversation, parent, options: currentOptions(), client_id: id, ...attachmentsFrame() };
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
  const attachments = attachmentsTake(); // sent: they move onto the prompt
  attachmentsShow(userView, { attachments });
  pending.set(id, { kind: "prompt", parent, content, attachments, views: [userView, answerView], placeholders: [userView.item, answerView.item] });
  if (queued === null) {
    promptBox.value = "";
    fitPromptBox();
  }
  renderThread();
}

// The box grows with what is typed, up to 40 % of the window, then scrolls.
function fitPromptBox() {
  promptBox.style.height = "auto";
  const most = Math.round(innerHeight * 0.4);
  promptBox.style.height = `${Math.min(promptBox.scrollHeight + 2, most)}px`;
  promptBox.style.overflowY = promptBox.scrollHeight + 2 > most ? "auto" : "hidden";
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
promptBox.addEventListener("input", () => {
  fitPromptBox();
  showMeter();
});
// Esc in the message box stops the answer being written, as the Stop button does.
promptBox.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !event.shiftKey && !stopButton.hidden) {
    event.preventDefault();
    stopButton.click();
  }
});
stopButton.addEventListener("click", () => {
  const id = tree.streamingOnPath();
  if (id) send({ type: "abort", message: id });
});
document.getElementById("reconnect").addEventListener("click", () => socket.reconnectNow());
document.getElementById("queued-cancel").addEventListener("click", cancelQueued);
for (const example of emptyState.querySelectorAll("button.example")) {
  example.addEventListener("click", () => {
    promptBox.value = example.textContent;
    promptBox.dispatchEvent(new Event("input"));
    promptBox.focus();
  });
}
document.getElementById("to-bottom").addEventListener("click", () => {
  list.scrollTo({ top: list.scrollHeight, behavior: "smooth" });
  promptBox.focus({ preventScroll: true });
});
document.addEventListener("wiz:settings", () => showMeter());

for (const message of pageData.messages) tree.add(message);
attachmentsInit({ onChange: () => (showComposerState(), showMeter()) });
renderThread();
socket.connect();
// Ready to type on arrival, unless the reader already went somewhere (or a touch keyboard would
// cover half the screen).
if (!touchTyping && document.activeElement === document.body) promptBox.focus({ preventScroll: true });
