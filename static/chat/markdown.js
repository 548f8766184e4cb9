// Markdown for the chat page: text → marked → DOMPurify → the page; then each code block gets
// highlight.js colours and a Copy button. The decisions behind it are in docs/frontend.md.
//
// Model output is untrusted. Three things keep it from running anything: raw HTML in the
// markdown is escaped (shown as text, never parsed as markup), DOMPurify keeps only the tags and
// attributes marked itself writes, and URLs must be http(s), mailto, tel or relative.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import hljs from "../vendor/highlightjs/highlight.min.js";

// The only images shown inline are pictures carried in the text itself; a remote image would be
// fetched as soon as the answer renders, which lets whoever wrote the text (a model echoing a web
// page, say) learn who read it and when. Remote images become links instead.
const INLINE_IMAGE_URL = /^data:image\/(?:png|jpeg|gif|webp);base64,[a-z0-9+/]+=*$/i;
// http(s), mailto, tel, or no scheme at all (relative, #fragment). DOMPurify strips whitespace and
// control characters before testing, so "java\tscript:" is caught too.
const SAFE_URL = /^(?:(?:https?|mailto|tel):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const marked = new Marked({
  gfm: true,
  // A single newline is a line break, as people (and models) mean it in chat.
  breaks: true,
  renderer: {
    // Raw HTML is shown as the text it is: a model explaining HTML must not have its examples
    // eaten, and nothing it writes becomes markup.
    html({ text, block }) {
      const escaped = escapeHtml(block ? text.replace(/\n+$/, "") : text);
      return block ? `<p class="raw-html">${escaped}</p>\n` : escaped;
    },
    image(token) {
      if (INLINE_IMAGE_URL.test(token.href)) return false; // marked's own <img>
      const label = token.text ? this.parser.parseInline(token.tokens) : escapeHtml(token.href);
      return `<a class="image-link" href="${escapeHtml(token.href)}">${label}</a>`;
    },
  },
});

// Exactly what marked writes (GFM: tables, task lists, strikethrough); anything else is dropped.
const purifier = DOMPurify(window);
purifier.setConfig({
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "img", "input", "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
  ],
  ALLOWED_ATTR: ["align", "alt", "checked", "class", "disabled", "href", "src", "start", "title", "type"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
});
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A" && node.hasAttribute("href")) {
    // A link opens in a new tab, so the conversation stays; the new page gets no handle on this
    // one (noopener) and no Referer naming the conversation (noreferrer).
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.nodeName === "IMG" && !INLINE_IMAGE_URL.test(node.getAttribute("src") || "")) {
    node.removeAttribute("src");
  }
  if (node.nodeName === "INPUT") {
    // marked writes inputs only as the ticks of task lists: read-only checkboxes.
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

/** Replace element's children with text rendered as sanitised markdown. */
export function renderMarkdown(element, text) {
  let fragment;
  try {
    fragment = purifier.sanitize(marked.parse(text));
  } catch (error) {
    console.error("Could not render markdown; showing the text as it is.", error);
    element.textContent = text;
    return;
  }
  enhanceCodeBlocks(fragment);
  element.replaceChildren(fragment);
}

/** Colour each <pre><code> under root and give it a bar with its language and a Copy button. */
export function enhanceCodeBlocks(root) {
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code) continue;
    const language = /(?:^|\s)language-(\S+)/.exec(code.className)?.[1] ?? "";
    // Only a named language is highlighted: guessing one (highlightAuto) tries every grammar on
    // every frame of a streaming answer, and guesses wrong on short snippets.
    if (language && hljs.getLanguage(language)) {
      hljs.highlightElement(code);
    } else {
      code.classList.add("hljs");
    }
    const block = document.createElement("div");
    block.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    // Both labels are drawn by CSS from data-label, so selecting and copying an answer copies
    // its text without "python" and "Copy" in the middle of it.
    const label = document.createElement("span");
    label.className = "code-language";
    label.dataset.label = language;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.dataset.label = "Copy";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", () => copyCode(button, code));
    bar.append(label, button);
    pre.replaceWith(block);
    block.append(bar, pre);
  }
}

/** Put text on the clipboard; true when it is there. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to the selection
    }
  }
  return copyThroughSelection(text);
}

async function copyCode(button, code) {
  // marked ends every block with a newline; without it a pasted command does not run at once.
  const copied = await copyText(code.textContent.replace(/\n$/, ""));
  button.focus();
  if (!copied) {
    // Leave the code selected so Ctrl+C (or the long-press menu) copies it.
    window.getSelection()?.selectAllChildren(code);
  }
  const label = copied ? "Copied" : "Press Ctrl+C";
  button.dataset.label = label;
  button.setAttribute("aria-label", copied ? "Copied" : "Copy failed; the code is selected");
  setTimeout(() => {
    button.dataset.label = "Copy";
    button.setAttribute("aria-label", "Copy code");
  }, 1500);
}

// navigator.clipboard exists only in secure contexts (https, localhost). The chat is usually
// opened over plain http at a LAN address, which is not one, so fall back to copying a selection.
function copyThroughSelection(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.top = "0";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}
