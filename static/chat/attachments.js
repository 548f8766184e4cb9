// Files and collections attached to the next prompt (templates/chat/_attachments.html): the
// paperclip's file picker, files dropped on the page or pasted into the message box, each
// uploaded at once with POST /api/documents/ and shown as a chip (name, size, pages, tokens,
// how its reading goes, or why it failed), and collections chosen in the picker. Send waits
// while a file is still being read. The prompt frame carries their ids (docs/protocol.md).
//
// The small API the chat page uses (chat.js; messages.js shows a sent prompt's chips):
//   attachmentsInit({onChange})  wire the controls; onChange() when Send's state may change
//   attachmentsPending()         why Send must wait ("" when it need not)
//   attachmentsFrame()           {documents: [ids], collections: [ids]} for the prompt frame
//   attachmentsFrameOf(entries)  the same for a sent message's attachments (an edit keeps them)
//   attachmentsContext(left, n)  what they add to the prompt, for the context meter
//   attachmentsTake()            what was attached, as a user message shows it; the box empties
//   attachmentsPutBack(entries)  give back what attachmentsTake took (the prompt was refused)
//   attachmentsShow(view, msg)   a user message's attachments as chips under its text
//
// File names are strangers' text: only ever set with textContent.

import { apiRequest } from "./api.js";
import { documentApply, documentProgress, documentsListen, formatSize, plural, uploadFile } from "../documents/documents.js";

const MOST_FILES = 20;
const MOST_COLLECTIONS = 10;

let chips = null;
let status = null;
let picker = null;
let changed = () => {};
let files = []; // {key, id, name, size, kind, pages, tokens, state, error, progress, sent, removed}
let collections = []; // {id, name, owner, mine}
let readable = [];
let listening = false;
let keys = 0;
let notice = ""; // a note about the last files attached ("20 at most")
const early = new Map(); // document id -> frames that came before its upload answered

export function attachmentsInit({ onChange = () => {} } = {}) {
  chips = document.getElementById("attachment-chips");
  status = document.getElementById("attach-status");
  picker = document.getElementById("attach-collection");
  changed = onChange;
  const input = document.getElementById("attach-input");
  document.getElementById("attach-button").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    attach([...input.files]);
    input.value = "";
  });
  // Files dropped anywhere on the page, or pasted into the message box.
  const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    document.body.classList.add("dropping");
  });
  addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) document.body.classList.remove("dropping");
  });
  addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    document.body.classList.remove("dropping");
    attach([...event.dataTransfer.files]);
  });
  document.getElementById("prompt").addEventListener("paste", (event) => {
    const pasted = [...(event.clipboardData?.files || [])];
    if (!pasted.length) return;
    event.preventDefault();
    attach(pasted);
  });
  picker.addEventListener("focus", loadCollections);
  picker.addEventListener("change", () => {
    const chosen = readable.find((c) => String(c.id) === picker.value);
    picker.value = "";
    if (!chosen || collections.some((c) => c.id === chosen.id)) return;
    if (collections.length >= MOST_COLLECTIONS) return say(`A message can take ${MOST_COLLECTIONS} collections at most.`);
    collections.push(chosen);
    render();
  });
  loadCollections();
  render();
}

async function loadCollections() {
  const answer = await apiRequest("/api/collections/");
  if (!answer.ok) return;
  readable = answer.data.results;
  const options = readable.map((c) => {
    const option = document.createElement("option");
    option.value = c.id;
    option.textContent = c.mine ? c.name : `${c.name} (${c.owner})`;
    return option;
  });
  const first = document.createElement("option");
  first.value = "";
  first.textContent = readable.length ? "Attach a collection…" : "No collections yet";
  picker.replaceChildren(first, ...options);
  picker.disabled = !readable.length;
}

function say(text) {
  notice = text;
  status.textContent = attachmentsPending() || notice;
}

function attach(list) {
  if (!list.length) return;
  if (!listening) {
    listening = true;
    documentsListen(onDocumentFrame);
  }
  say("");
  for (const file of list) {
    if (files.length >= MOST_FILES) {
      say(`A message can take ${MOST_FILES} files at most; “${file.name}” and the rest were left out.`);
      break;
    }
    upload(file);
  }
}

async function upload(file) {
  const entry = { key: ++keys, id: null, name: file.name, size: file.size, kind: "", pages: 0, tokens: 0, state: "uploading", sent: null };
  files.push(entry);
  render();
  const answer = await uploadFile("/api/documents/", file, (percent) => {
    entry.sent = percent;
    render();
  });
  if (!answer.ok) {
    entry.state = "failed";
    entry.error = answer.message;
    return render();
  }
  if (entry.removed) {
    // Taken off while it was still being sent: it was uploaded for this message only.
    await apiRequest(`/api/documents/${answer.data.id}/`, { method: "DELETE" });
    return;
  }
  Object.assign(entry, answer.data, { sent: null });
  render(); // "Waiting to be read…", even when the worker's frames came first
  for (const frame of early.get(entry.id) || []) documentApply(entry, frame);
  early.delete(entry.id);
  render();
}

function onDocumentFrame(frame) {
  if (!frame.type?.startsWith("document.")) return;
  const entry = files.find((f) => f.id === frame.document);
  if (!entry) {
    if (!early.has(frame.document)) early.set(frame.document, []);
    early.get(frame.document).push(frame);
    return;
  }
  documentApply(entry, frame);
  render();
}

function remove(entry) {
  entry.removed = true;
  files = files.filter((f) => f !== entry);
  // A file uploaded for this message and not sent with it is not kept.
  if (entry.id && !entry.sentWith) apiRequest(`/api/documents/${entry.id}/`, { method: "DELETE" });
  render();
}

function removeCollection(collection) {
  collections = collections.filter((c) => c !== collection);
  render();
}

// "1.2 MB · 60 pages · 12,345 tokens"
function fileDetails(file) {
  const parts = [formatSize(file.size)];
  if (file.pages) parts.push(plural(file.pages, "page"));
  if (file.tokens) parts.push(plural(file.tokens, "token"));
  return parts.join(" · ");
}

function chip(className, name, details, { title, onRemove, state } = {}) {
  const item = document.createElement("li");
  item.className = `chip ${className}`;
  if (state) item.dataset.state = state;
  const label = document.createElement("span");
  label.className = "chip-name";
  label.textContent = name;
  label.title = title || name;
  const more = document.createElement("span");
  more.className = "chip-details";
  more.textContent = details;
  item.append(label, more);
  if (onRemove) {
    const close = document.createElement("button");
    close.type = "button";
    close.className = "chip-remove";
    close.textContent = "×";
    close.setAttribute("aria-label", `Remove ${name}`);
    close.title = `Remove ${name}`;
    close.addEventListener("click", onRemove);
    item.append(close);
  }
  return item;
}

function fileChip(file, onRemove) {
  const ready = file.state === "ready" || file.state === undefined;
  const details = ready ? fileDetails(file) : `${formatSize(file.size)} · ${documentProgress(file)}`;
  const item = chip("file-chip", file.name, details, { onRemove, state: file.state || "ready" });
  if (file.id) item.dataset.document = file.id;
  if (file.state === "failed") {
    item.querySelector(".chip-details").classList.add("error");
    item.title = file.error || "";
  }
  return item;
}

function collectionChip(collection, onRemove) {
  const item = chip("collection-chip", collection.name, collection.mine === false ? `collection · ${collection.owner}` : "collection", { onRemove });
  item.dataset.collection = collection.id;
  return item;
}

function render() {
  chips.replaceChildren(
    ...files.map((f) => fileChip(f, () => remove(f))),
    ...collections.map((c) => collectionChip(c, () => removeCollection(c))),
  );
  chips.hidden = !chips.children.length;
  status.textContent = attachmentsPending() || notice;
  changed();
}

export function attachmentsPending() {
  const failed = files.find((f) => f.state === "failed");
  if (failed) return `“${failed.name}” could not be read: remove it to send.`;
  const busy = files.find((f) => f.state !== "ready");
  if (!busy) return "";
  return `Waiting for “${busy.name}”: ${documentProgress(busy).replace(/…$/, "")}; Send is ready when it is read.`;
}

export function attachmentsFrame() {
  const frame = {};
  if (files.length) frame.documents = files.map((f) => f.id);
  if (collections.length) frame.collections = collections.map((c) => c.id);
  return frame;
}

// What the attachments add to the prompt, as the inference worker puts them in
// (chat/grounding.py): files whole while they fit in half of what the window has `left`;
// otherwise, and for collections, passages, a quarter of the window at most. Its tokens, and
// a note for the meter.
export function attachmentsContext(left, window) {
  const tokens = files.reduce((sum, f) => sum + (f.state === "ready" ? f.tokens : 0), 0);
  const whole = tokens <= Math.max(left, 0) / 2 ? tokens : 0;
  const searched = (tokens && !whole) || collections.length;
  const passages = searched ? Math.min(Math.floor(window / 4), (tokens - whole) || Infinity) : 0;
  const notes = [];
  if (whole) notes.push(`${whole.toLocaleString()} in attached files`);
  if (passages) notes.push(`up to ${passages.toLocaleString()} in passages`);
  return { tokens: whole + passages, note: notes.length ? ` (${notes.join(", ")})` : "" };
}

export function attachmentsFrameOf(entries = []) {
  const kept = entries.filter((e) => !e.gone);
  const documents = kept.filter((e) => e.collection_id === undefined).map((e) => e.id);
  const collections = kept.filter((e) => e.collection_id !== undefined).map((e) => e.collection_id);
  const frame = {};
  if (documents.length) frame.documents = documents;
  if (collections.length) frame.collections = collections;
  return frame;
}

// What a user message shows (the shape of a message's `attachments`, docs/protocol.md).
export function attachmentsTake() {
  const entries = [
    ...files.map((f) => ({ id: f.id, name: f.name, size: f.size, pages: f.pages, tokens: f.tokens, kind: f.kind, collection: null, gone: false })),
    ...collections.map((c) => ({ collection_id: c.id, collection_name: c.name, gone: false })),
  ];
  for (const f of files) f.sentWith = true;
  files = [];
  collections = [];
  render();
  return entries;
}

export function attachmentsPutBack(entries) {
  for (const entry of entries || []) {
    if (entry.collection_id !== undefined) {
      const known = readable.find((c) => c.id === entry.collection_id);
      collections.push(known || { id: entry.collection_id, name: entry.collection_name });
    } else {
      files.push({ ...entry, key: ++keys, state: "ready" });
    }
  }
  render();
}

export function attachmentsShow(view, message) {
  view.item.querySelector(":scope > .message-attachments")?.remove();
  const entries = message.attachments || [];
  if (!entries.length) return;
  const list = document.createElement("ul");
  list.className = "chips message-attachments";
  list.setAttribute("aria-label", "Attached");
  for (const entry of entries) {
    let item;
    if (entry.collection_id !== undefined) {
      item = collectionChip({ id: entry.collection_id, name: entry.collection_name });
    } else {
      item = fileChip({ ...entry, state: "ready" });
    }
    if (entry.gone) {
      item.classList.add("gone");
      const name = item.querySelector(".chip-name");
      if (!name.textContent) name.textContent = entry.collection_id !== undefined ? "a collection" : "a file";
      item.querySelector(".chip-details").textContent = "deleted";
    }
    list.append(item);
  }
  view.content.after(list);
}
