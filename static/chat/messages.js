// The messages of the chat page as the reader sees them: one view (an <li>) per message of the
// tree, answers rendered as sanitised markdown (markdown.js, docs/frontend.md) and prompts shown
// as the plain text they are (textContent), the ‹ 2/3 › switch and the message actions, and the
// scrolling of the list. chat.js owns the socket and says what happened; this module shows it.

import { attachmentsShow } from "./attachments.js";
import { citationsShow } from "./citations.js";
import { copyText, renderMarkdown } from "./markdown.js";
import { thinkingShow } from "./thinking.js";
import { toast } from "./toast.js";
import { isUnfinished } from "./tree.js";

// A prompt longer than this is shown folded (about 16 lines) with "Show all": a pasted 32 KB
// log made the conversation 7,000 px tall.
const FOLD_LINES = 16;
const FOLD_CHARS = 1200;

// The message actions are icons (SVG paths on a 24-unit grid), named by aria-label and title.
const ICONS = {
  copy: "M9 9h10v11H9zM5 15V4h10",
  regenerate: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
  edit: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
};

export function button(label, className, onClick, ariaLabel) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = label;
  if (ariaLabel) element.setAttribute("aria-label", ariaLabel);
  element.addEventListener("click", onClick);
  return element;
}

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

// An empty view: {item, content, meta, tools, seq (the last chunk shown), text (the markdown)}.
export function messageView(role) {
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

export function showPrompt(view, text) {
  view.content.textContent = text;
  view.item.classList.toggle("folded", isLong(text));
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

// The line under a finished answer: model, tokens, speed, and anything worth knowing.
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

export class MessageViews {
  // tree: the MessageTree; list: the <ol> of messages; toBottom: the ↓ button.
  constructor(tree, list, toBottom) {
    this.tree = tree;
    this.list = list;
    this.toBottom = toBottom;
    this.views = new Map(); // message id -> its view
    this.stale = new Set(); // streaming views whose text changed since they were last rendered
    this.frameRequested = false;
    this.quietUntil = 0; // no streaming render before this time (performance.now())
    list.addEventListener("scroll", () => this.showToBottom(), { passive: true });
    addEventListener("resize", () => this.showToBottom());
  }

  get(id) {
    return this.views.get(id);
  }

  // A view made before its message had an id (a prompt being sent), kept under that id now.
  adopt(id, view) {
    view.item.dataset.message = id;
    this.views.set(id, view);
  }

  // The view of a saved message, made the first time it is needed.
  viewFor(id) {
    let view = this.views.get(id);
    if (view) return view;
    const message = this.tree.get(id);
    view = messageView(message.role);
    this.adopt(id, view);
    if (message.role !== "assistant") {
      showPrompt(view, message.content);
      attachmentsShow(view, message);
    } else if (isUnfinished(message)) {
      view.item.classList.add("streaming");
      view.item.dataset.state = message.state;
      view.meta.textContent = message.state === "queued" ? "Waiting in the queue…" : "Answering…";
    } else {
      this.showFinished(view, message);
    }
    return view;
  }

  scrollToEnd() {
    this.list.scrollTop = this.list.scrollHeight;
    this.showToBottom();
  }

  isNearEnd() {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 48;
  }

  // The ↓ button shows while the newest message is out of view (the reader scrolled up, or an
  // answer grew below the screen).
  showToBottom() {
    this.toBottom.hidden = this.isNearEnd();
  }

  // Chunks can arrive faster than the screen repaints (several answers at once, each chunk
  // every 40 ms), and each render parses its whole answer. So a chunk only marks its message
  // stale, and the stale messages (only those) are rendered at most once per frame.
  renderSoon(view) {
    this.stale.add(view);
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame((now) => this.renderStale(now));
  }

  renderStale(now) {
    // A very long answer takes longer to render (tens of ms at 50 KB); leave the page three
    // times that long between renders to scroll, select and type, instead of every frame.
    if (now < this.quietUntil) {
      requestAnimationFrame((later) => this.renderStale(later));
      return;
    }
    this.frameRequested = false;
    const started = performance.now();
    // Follow the answer only if the reader has not scrolled up to read something else.
    const follow = this.isNearEnd();
    for (const view of this.stale) renderAnswer(view);
    this.stale.clear();
    if (follow) this.scrollToEnd();
    else this.showToBottom();
    const finished = performance.now();
    this.quietUntil = finished + 3 * (finished - started);
  }

  showFinished(view, message) {
    const calls = (message.tool_calls || []).map((c) => `→ ${c.function.name}(${c.function.arguments})`);
    // At once, not on the next frame: a finished answer must read as its saved content now.
    this.stale.delete(view);
    view.text = message.content || "";
    if (calls.length) {
      view.content.classList.replace("markdown", "tool-calls");
      view.content.textContent = calls.join("\n");
    } else {
      renderAnswer(view);
    }
    citationsShow(view, message);
    thinkingShow(view, message);
    view.item.classList.remove("streaming");
    const failed = message.finish_reason === "error" || message.state === "failed";
    view.item.classList.toggle("failed", failed);
    view.meta.textContent = failed ? message.error || "The answer failed." : describe(message);
    view.item.dataset.state = failed ? "failed" : message.finish_reason === "aborted" ? "aborted" : "done";
  }

  // Copy a message as its markdown source, as written (not the rendered text).
  async copy(id) {
    const message = this.tree.get(id);
    const text = message.role === "assistant" ? this.viewFor(id).text || message.content : message.content;
    const copied = await copyText(text);
    const what = message.role === "user" ? "prompt" : "answer";
    toast(copied ? `Copied the ${what}.` : "Could not copy: this browser refused the clipboard.", { error: !copied });
  }

  // The ‹ 2/3 › switch of a message that has other versions, and what can be done with it.
  // actions: {busy (an answer is being written), choose(id), regenerate(id), edit(id)}.
  showTools(id, actions) {
    const message = this.tree.get(id);
    const view = this.viewFor(id);
    const siblings = this.tree.siblings(id);
    const tools = [];
    if (siblings.length > 1) {
      const index = siblings.indexOf(id);
      const versions = document.createElement("span");
      versions.className = "versions";
      const label = message.role === "user" ? "prompt" : "answer";
      const previous = button("‹", "version-previous", () => actions.choose(siblings[index - 1]), `Previous ${label}`);
      const next = button("›", "version-next", () => actions.choose(siblings[index + 1]), `Next ${label}`);
      previous.disabled = index === 0;
      next.disabled = index === siblings.length - 1;
      const count = document.createElement("span");
      count.className = "version-count";
      count.textContent = `${index + 1}/${siblings.length}`;
      versions.append(previous, count, next);
      tools.push(versions);
    }
    if (message.role === "user" && isLong(message.content)) {
      const folded = view.item.classList.contains("folded");
      const lines = message.content.split("\n").length;
      const fold = button(folded ? `Show all (${lines.toLocaleString()} lines)` : "Show less", "fold", () => {
        view.item.classList.toggle("folded");
        this.showTools(id, actions);
      });
      fold.setAttribute("aria-expanded", String(!folded));
      tools.push(fold);
    }
    if (message.role === "user") {
      tools.push(iconButton("copy", "copy-message", () => this.copy(id), "Copy this prompt"));
      const edit = iconButton("edit", "edit", () => actions.edit(id), "Edit this prompt and send it again");
      edit.disabled = actions.busy;
      tools.push(edit);
    } else if (message.role === "assistant" && !isUnfinished(message)) {
      tools.push(iconButton("copy", "copy-message", () => this.copy(id), "Copy this answer as markdown"));
      const again = iconButton("regenerate", "regenerate", () => actions.regenerate(id), "Write this answer again");
      again.disabled = actions.busy;
      tools.push(again);
    }
    view.tools.replaceChildren(...tools);
  }
}
