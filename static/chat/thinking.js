// A thinking model's thoughts on the chat page (docs/frontend.md, "Thinking"): a <details> block
// above the answer that streams open while the model thinks ("Thinking…"), closes to "Thought
// for 12 s" when the answer starts, and can be opened again. Its text is rendered and sanitised
// like answers (markdown.js). chat.js calls three functions: thinkingChunk for each `reasoning`
// chunk, thinkingEnd when the first `content` chunk comes, thinkingShow for a finished answer
// (its `done`, or a saved message from the page's data).

import { renderMarkdown } from "./markdown.js";

const stale = new Set(); // blocks whose text changed since they were last rendered
let frameRequested = false;

// The block of a message view, made (before the answer's content) the first time it is needed.
function blockFor(view) {
  if (view.thinking) return view.thinking;
  const details = document.createElement("details");
  details.className = "thinking";
  const summary = document.createElement("summary");
  const body = document.createElement("div");
  body.className = "thinking-body markdown";
  details.append(summary, body);
  view.item.insertBefore(details, view.content);
  view.thinking = { details, summary, body, text: "", startedAt: 0, endedAt: 0, state: "" };
  return view.thinking;
}

function thinkingState(block, state) {
  block.state = state;
  block.details.dataset.state = state;
}

// Chunks come faster than the screen repaints; like answers, a block renders once per frame.
function renderSoon(block) {
  stale.add(block);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    for (const each of stale) {
      // The list follows the thoughts, as it follows an answer, unless the reader scrolled up.
      const list = each.details.closest(".messages");
      const follow = list && list.scrollHeight - list.scrollTop - list.clientHeight < 48;
      renderMarkdown(each.body, each.text);
      if (follow) list.scrollTop = list.scrollHeight;
    }
    stale.clear();
  });
}

/** A `reasoning` chunk: the block opens (the first time) and streams. */
export function thinkingChunk(view, text) {
  const block = blockFor(view);
  if (!block.state) {
    block.startedAt = performance.now();
    thinkingState(block, "thinking");
    block.summary.textContent = "Thinking…";
    block.details.open = true;
  }
  block.text += text;
  renderSoon(block);
}

// "Thought for 0.4 s", "Thought for 12 s": the worker's measure when the answer has one (a
// replayed stream arrives all at once, so the page's own clock would say nothing).
function thoughtFor(block, reasoningMs) {
  let ms = reasoningMs;
  if (ms == null && block.startedAt) ms = (block.endedAt || performance.now()) - block.startedAt;
  if (ms == null) return "Thoughts";
  const seconds = ms / 1000;
  return `Thought for ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}

/** The thinking is over (the first `content` chunk came): the block closes to its time. */
export function thinkingEnd(view, reasoningMs) {
  const block = view.thinking;
  if (!block || block.state !== "thinking") return;
  block.endedAt = performance.now();
  thinkingState(block, "thought");
  block.summary.textContent = thoughtFor(block, reasoningMs);
  block.details.open = false;
}

/** A finished answer: its saved thoughts in a closed block, or none. A block that never closed
 * was kept as the answer (`done.reasoning` is then empty): the block goes and its note stays. */
export function thinkingShow(view, message) {
  const reasoning = message.reasoning || "";
  const reasoningMs = message.timings?.reasoning_ms;
  if (reasoning) {
    const block = blockFor(view);
    thinkingEnd(view, reasoningMs);
    thinkingState(block, "thought"); // also a saved answer's, never streamed here
    block.text = reasoning;
    stale.delete(block);
    renderMarkdown(block.body, reasoning);
    block.summary.textContent = thoughtFor(block, reasoningMs);
  } else if (view.thinking) {
    stale.delete(view.thinking);
    view.thinking.details.remove();
    view.thinking = null;
  }
  let note = view.item.querySelector(":scope > .answer-note");
  if (message.note) {
    if (!note) {
      note = document.createElement("p");
      note.className = "answer-note";
      view.item.insertBefore(note, view.content);
    }
    note.textContent = message.note;
  } else {
    note?.remove();
  }
}
