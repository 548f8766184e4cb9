// An answer's sources (a message's `citations`, docs/protocol.md): numbered chips under the
// answer (file, page), `[n]` in the answer's text made a link, and either opening a panel with
// the passage the model was given and a link to the file, or, once the file is deleted, the
// passage kept with the answer and "This file has been deleted."
//
//   citationsShow(view, message)  after the answer is rendered (markdown.js), and again on
//                                 each render: it replaces what it added before.
//
// File names and passages are strangers' text: only ever set with textContent.

const CITE = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;
const HAS_CITE = /\[\d{1,3}(?:\s*,\s*\d{1,3})*\]/;

let panel = null;
let opener = null;

function where(citation) {
  if (citation.page) return `page ${citation.page}`;
  return citation.whole ? "whole file" : "";
}

function label(citation) {
  const place = where(citation);
  return place ? `${citation.name}, ${place}` : citation.name;
}

function panelMake() {
  panel = document.createElement("aside");
  panel.id = "citation-panel";
  panel.className = "citation-panel";
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-labelledby", "citation-title");
  panel.hidden = true;
  const head = document.createElement("div");
  head.className = "citation-head";
  const title = document.createElement("h2");
  title.id = "citation-title";
  title.tabIndex = -1;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "citation-close";
  close.textContent = "×";
  close.setAttribute("aria-label", "Close the source");
  close.title = "Close (Esc)";
  close.addEventListener("click", citationClose);
  head.append(title, close);
  const place = document.createElement("p");
  place.className = "citation-place";
  const text = document.createElement("blockquote");
  text.className = "citation-text";
  const file = document.createElement("p");
  file.className = "citation-file";
  panel.append(head, place, text, file);
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      citationClose();
    }
  });
  document.body.append(panel);
}

function citationOpen(citation, from) {
  if (!panel) panelMake();
  opener = from;
  panel.querySelector("#citation-title").textContent = `[${citation.n}] ${citation.name}`;
  const place = where(citation);
  panel.querySelector(".citation-place").textContent = place ? place[0].toUpperCase() + place.slice(1) : "";
  panel.querySelector(".citation-text").textContent = citation.text || "";
  const file = panel.querySelector(".citation-file");
  if (citation.gone) {
    file.className = "citation-file gone";
    file.textContent = "This file has been deleted.";
  } else {
    file.className = "citation-file";
    const link = document.createElement("a");
    link.href = `/api/documents/${citation.document}/file`;
    link.download = "";
    link.textContent = `Download ${citation.name}`;
    file.replaceChildren(link);
  }
  panel.dataset.n = citation.n;
  panel.hidden = false;
  panel.querySelector("#citation-title").focus();
}

export function citationClose() {
  if (!panel || panel.hidden) return;
  panel.hidden = true;
  opener?.focus();
  opener = null;
}

// [n] in the answer's text (not in code, not already in a link) becomes a link to source n.
function linkMarkers(content, byNumber) {
  const walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) =>
      node.parentElement.closest("code, pre, a") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  const found = [];
  while (walker.nextNode()) if (HAS_CITE.test(walker.currentNode.data)) found.push(walker.currentNode);
  for (const node of found) {
    const parts = [];
    let last = 0;
    for (const match of node.data.matchAll(CITE)) {
      const numbers = match[1].split(/\s*,\s*/).map(Number);
      if (!numbers.every((n) => byNumber.has(n))) continue;
      parts.push(node.data.slice(last, match.index), "[");
      numbers.forEach((n, i) => {
        if (i) parts.push(", ");
        const citation = byNumber.get(n);
        const link = document.createElement("a");
        link.href = "#";
        link.className = "cite";
        link.dataset.n = n;
        link.textContent = String(n);
        link.setAttribute("aria-label", `Source ${n}: ${label(citation)}`);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          citationOpen(citation, link);
        });
        parts.push(link);
      });
      parts.push("]");
      last = match.index + match[0].length;
    }
    if (!last) continue;
    parts.push(node.data.slice(last));
    node.replaceWith(...parts.filter((p) => p !== ""));
  }
}

export function citationsShow(view, message) {
  view.item.querySelector(":scope > .sources")?.remove();
  const citations = message.citations || [];
  if (!citations.length) return;
  const byNumber = new Map(citations.map((c) => [c.n, c]));
  linkMarkers(view.content, byNumber);
  const sources = document.createElement("div");
  sources.className = "sources chips";
  sources.setAttribute("role", "group");
  sources.setAttribute("aria-label", "Sources");
  for (const citation of citations) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = citation.gone ? "chip source-chip gone" : "chip source-chip";
    chip.dataset.n = citation.n;
    const number = document.createElement("span");
    number.className = "source-number";
    number.textContent = String(citation.n);
    const name = document.createElement("span");
    name.className = "chip-name";
    name.textContent = citation.name;
    chip.append(number, name);
    if (citation.page) {
      const page = document.createElement("span");
      page.className = "chip-details";
      page.textContent = `p. ${citation.page}`;
      chip.append(page);
    }
    chip.title = citation.gone ? `${label(citation)} (deleted)` : label(citation);
    chip.addEventListener("click", () => citationOpen(citation, chip));
    sources.append(chip);
  }
  view.content.after(sources);
}
