// The context meter under the composer (docs/frontend.md): how much of the model's context
// window the branch shown uses, and a warning before a prompt would not fit. The answer needs
// room too, as the engine reserves it: the smaller of max_tokens and a quarter of the window.

import { pageData } from "./page-data.js";
import { currentModel, currentOptions } from "./settings.js";
import { estimateTokens } from "./tree.js";

const meter = document.getElementById("context-meter");
const text = document.getElementById("context-text");
const warningLine = document.getElementById("context-warning");

const NOTHING_ATTACHED = () => ({ tokens: 0, note: "" });

// tree: the MessageTree shown; prompt: what is in the box, not sent yet; attached(left, window):
// what the files and collections attached to it add to the prompt, {tokens, note}, given the
// tokens the window has left (attachments.js: files whole while they fit, else passages).
export function showContext(tree, prompt, attached = NOTHING_ATTACHED) {
  const model = currentModel();
  const window = model?.context_window || 0;
  meter.parentElement.hidden = !window;
  if (!window) return;
  const used = tree.usedTokens(currentOptions().system_prompt || "");
  const room = Math.min(currentOptions().max_tokens || pageData.default_max_tokens, Math.floor(window / 4));
  const typed = estimateTokens(prompt);
  const files = attached(window - room - used.tokens - typed, window);
  const asked = typed + files.tokens;
  const shown = used.tokens + files.tokens;
  meter.max = window;
  meter.value = Math.min(shown, window);
  text.textContent = `${used.exact && !files.tokens ? "" : "about "}${shown.toLocaleString()} of ${window.toLocaleString()} tokens${files.note}`;
  let warning = "";
  let level = "";
  if (asked + room > window) {
    warning = `This message is about ${asked.toLocaleString()} tokens and ${model.name} reads ${window.toLocaleString()} at most, with room for its answer; shorten it.`;
    level = "error";
  } else if (asked && used.tokens + asked + room > window) {
    warning = "This conversation is nearly as long as the model can read: the oldest messages will be left out of what it sees (the system prompt stays). Start a new chat to keep everything in view.";
    level = "warning";
  }
  warningLine.textContent = warning;
  warningLine.dataset.level = level;
}

// The warning when the prompt cannot fit (the page then asks before sending it), or "".
export function contextRefusal() {
  return warningLine.dataset.level === "error" ? warningLine.textContent : "";
}
