// The collections page (/collections/, templates/documents/collections.html): the user's own
// collections and those shared with them, from the JSON API (docs/api.md, "Documents API");
// the files of the one chosen, uploaded by picker or drag and drop, with each file's progress
// from /ws/documents/. Names come from strangers' files: they are only ever set as text.

import { apiRequest } from "../chat/api.js";
import {
  documentApply,
  documentFraction,
  documentProgress,
  documentsListen,
  formatSize,
  uploadFile,
} from "./documents.js";

const pageData = JSON.parse(document.getElementById("page-data").textContent);
const $ = (id) => document.getElementById(id);
const mineList = $("mine");
const sharedList = $("shared");
const detail = $("detail");
const nameHeading = $("collection-name");
const ownerLine = $("collection-owner");
const renameForm = $("rename-form");
const renameBox = $("rename-name");
const shareForm = $("share-form");
const dropZone = $("drop-zone");
const fileInput = $("file-input");
const rows = $("documents");
const pageError = $("page-error");
const detailError = $("detail-error");
const deleteDialog = $("delete-dialog");

let collections = [];
let current = null; // the collection shown: {…, documents: [doc]}
// Socket frames about documents this page does not know yet: an upload's first progress can
// come before its POST has answered.
const early = new Map();
let uploadKeys = 0;

$("max-size").textContent = formatSize(pageData.max_bytes);

function showError(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function collectionItem(collection) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = `#collection-${collection.id}`;
  link.dataset.collection = collection.id;
  link.textContent = collection.name;
  if (!collection.mine) {
    const owner = document.createElement("small");
    owner.textContent = ` · ${collection.owner}`;
    link.append(owner);
  }
  if (current?.id === collection.id) link.setAttribute("aria-current", "page");
  item.append(link);
  return item;
}

function renderLists() {
  const empty = (text) => {
    const item = document.createElement("li");
    item.className = "empty";
    item.textContent = text;
    return item;
  };
  const mine = collections.filter((c) => c.mine);
  const shared = collections.filter((c) => !c.mine);
  mineList.replaceChildren(...(mine.length ? mine.map(collectionItem) : [empty("None yet.")]));
  sharedList.replaceChildren(...(shared.length ? shared.map(collectionItem) : [empty("Nothing is shared with you.")]));
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text !== undefined) td.textContent = text;
  return td;
}

function documentRow(doc) {
  const row = document.createElement("tr");
  row.dataset.state = doc.state;
  if (doc.id) row.dataset.document = doc.id;
  const name = cell(undefined, "file-name");
  if (doc.id && doc.state !== "uploading") {
    const link = document.createElement("a");
    link.href = `/api/documents/${doc.id}/file`;
    link.download = "";
    link.textContent = doc.name;
    link.title = `Download ${doc.name}`;
    name.append(link);
  } else {
    name.textContent = doc.name;
  }
  const ready = doc.state === "ready";
  row.append(
    name,
    cell(doc.kind || "—"),
    cell(formatSize(doc.size)),
    cell(ready && doc.pages ? doc.pages.toLocaleString() : "—", "pages"),
    cell(ready ? doc.tokens.toLocaleString() : "—", "tokens"),
  );
  const state = cell(undefined, "state");
  const fraction = documentFraction(doc);
  if (doc.state !== "ready" && doc.state !== "failed") {
    const bar = document.createElement("progress");
    bar.max = 1;
    if (fraction !== null) bar.value = fraction;
    bar.setAttribute("aria-hidden", "true");
    state.append(bar, " ");
  }
  const words = document.createElement("span");
  words.className = doc.state === "failed" ? "progress-text error" : "progress-text";
  words.textContent = documentProgress(doc);
  state.append(words);
  row.append(state);
  const actions = cell(undefined, "actions");
  if (current.mine && doc.id && doc.state !== "uploading") {
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${doc.name}`);
    remove.addEventListener("click", () => removeDocument(doc));
    actions.append(remove);
  } else if (!doc.id && doc.state === "failed") {
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "remove";
    dismiss.textContent = "Dismiss";
    dismiss.addEventListener("click", () => {
      current.documents = current.documents.filter((d) => d !== doc);
      renderDocuments();
    });
    actions.append(dismiss);
  }
  row.append(actions);
  return row;
}

function renderDocuments() {
  rows.replaceChildren(...current.documents.map(documentRow));
  $("no-documents").hidden = current.documents.length > 0;
}

function renderDetail() {
  renderLists();
  $("nothing-chosen").hidden = current !== null;
  detail.hidden = current === null;
  if (!current) return;
  nameHeading.textContent = current.name;
  nameHeading.hidden = false;
  renameForm.hidden = true;
  for (const element of detail.querySelectorAll("[data-owner-only]")) element.hidden = !current.mine;
  ownerLine.textContent = current.mine
    ? sharingSentence(current.shared)
    : `Shared with you by ${current.owner}: you can read and download its files, and attach it to a chat; only ${current.owner} can change it.`;
  shareForm.hidden = !(current.mine && pageData.can_share);
  if (!shareForm.hidden) renderShare();
  showError(detailError, "");
  renderDocuments();
}

function sharingSentence(shared) {
  const whom = [];
  if (shared.everyone) whom.push("everyone");
  if (shared.groups.length) whom.push(`the group${shared.groups.length === 1 ? "" : "s"} ${shared.groups.join(", ")}`);
  return whom.length ? `Yours; shared read-only with ${whom.join(" and ")}.` : "Yours; nobody else sees it.";
}

function renderShare() {
  $("share-everyone").checked = current.shared.everyone;
  const boxes = pageData.groups.map((group) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = group;
    box.checked = current.shared.groups.includes(group);
    label.append(box, ` ${group}`);
    return label;
  });
  $("share-groups").replaceChildren(...boxes);
  $("share-status").textContent = "";
}

async function loadCollections() {
  const answer = await apiRequest("/api/collections/");
  if (!answer.ok) return showError(pageError, answer.message);
  collections = answer.data.results;
}

async function choose(id) {
  const known = collections.find((c) => c.id === id);
  if (!known) {
    current = null;
    renderDetail();
    return;
  }
  const answer = await apiRequest(`/api/collections/${id}/`);
  if (!answer.ok) {
    showError(pageError, answer.message);
    return;
  }
  // Files still being sent into it stay in the list.
  const sending = current?.id === id ? current.documents.filter((d) => !d.id) : [];
  current = { ...answer.data, documents: [...answer.data.documents, ...sending] };
  for (const doc of current.documents) applyEarly(doc);
  renderDetail();
}

function chosenId() {
  const match = /^#collection-(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

async function showChosen() {
  const id = chosenId() ?? collections.find((c) => c.mine)?.id ?? collections[0]?.id ?? null;
  await choose(id);
}

function replaceCollection(data) {
  const { documents, ...fields } = data;
  collections = collections.map((c) => (c.id === data.id ? { ...c, ...fields } : c));
  if (current?.id === data.id) Object.assign(current, fields);
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = $("create-name");
  const answer = await apiRequest("/api/collections/", { method: "POST", body: { name: box.value } });
  if (!answer.ok) return showError(pageError, answer.message);
  showError(pageError, "");
  box.value = "";
  collections.push(answer.data);
  collections.sort((a, b) => a.name.localeCompare(b.name));
  location.hash = `collection-${answer.data.id}`; // hashchange shows it
});

$("rename").addEventListener("click", () => {
  nameHeading.hidden = true;
  renameForm.hidden = false;
  renameBox.value = current.name;
  renameBox.focus();
  renameBox.select();
});
$("rename-cancel").addEventListener("click", renderDetail);
renameBox.addEventListener("keydown", (event) => {
  if (event.key === "Escape") renderDetail();
});
renameForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const answer = await apiRequest(`/api/collections/${current.id}/`, { method: "PATCH", body: { name: renameBox.value } });
  if (!answer.ok) return showError(detailError, answer.message);
  replaceCollection(answer.data);
  renderDetail();
});

$("delete").addEventListener("click", () => {
  const count = current.documents.filter((d) => d.id).length;
  $("delete-question").textContent =
    `Delete “${current.name}”? Its ${count === 1 ? "file is" : `${count} files are`} deleted too, and chats can no longer use ${count === 1 ? "it" : "them"}; this cannot be undone.`;
  deleteDialog.returnValue = "";
  deleteDialog.showModal();
});
deleteDialog.addEventListener("close", async () => {
  if (deleteDialog.returnValue !== "delete") return;
  const id = current.id;
  const answer = await apiRequest(`/api/collections/${id}/`, { method: "DELETE" });
  if (!answer.ok) return showError(detailError, answer.message);
  collections = collections.filter((c) => c.id !== id);
  current = null;
  history.replaceState(null, "", location.pathname);
  await showChosen();
});

shareForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const groups = [...$("share-groups").querySelectorAll("input:checked")].map((box) => box.value);
  const share = { everyone: $("share-everyone").checked, groups };
  const answer = await apiRequest(`/api/collections/${current.id}/`, { method: "PATCH", body: { share } });
  if (!answer.ok) return showError(detailError, answer.message);
  replaceCollection(answer.data);
  ownerLine.textContent = sharingSentence(current.shared);
  $("share-status").textContent = "Saved.";
});

async function removeDocument(doc) {
  const answer = await apiRequest(`/api/documents/${doc.id}/`, { method: "DELETE" });
  if (!answer.ok) return showError(detailError, answer.message);
  current.documents = current.documents.filter((d) => d.id !== doc.id);
  renderDocuments();
}

function uploadAll(files) {
  if (!current?.mine) return;
  for (const file of files) upload(current, file);
}

async function upload(collection, file) {
  const doc = { key: ++uploadKeys, id: null, name: file.name, size: file.size, kind: "", state: "uploading", sent: null };
  collection.documents.push(doc);
  const shown = () => current?.id === collection.id && renderDocuments();
  if (file.size > pageData.max_bytes) {
    doc.state = "failed";
    doc.error = `“${file.name}” is ${formatSize(file.size)}; a file may be ${formatSize(pageData.max_bytes)} at most. Split it into smaller files and upload those.`;
    return shown();
  }
  shown();
  const answer = await uploadFile(`/api/collections/${collection.id}/documents/`, file, (percent) => {
    doc.sent = percent;
    shown();
  });
  if (!answer.ok) {
    doc.state = "failed";
    doc.error = answer.message;
    return shown();
  }
  Object.assign(doc, answer.data);
  shown(); // "Waiting to be read…", even when the worker's frames came first
  applyEarly(doc);
  shown();
}

function applyEarly(doc) {
  for (const frame of early.get(doc.id) || []) documentApply(doc, frame);
  early.delete(doc.id);
}

function onDocumentFrame(frame) {
  if (!frame.type?.startsWith("document.")) return;
  const doc = current?.documents.find((d) => d.id === frame.document);
  if (!doc) {
    if (!early.has(frame.document)) early.set(frame.document, []);
    early.get(frame.document).push(frame);
    return;
  }
  documentApply(doc, frame);
  renderDocuments();
}

$("choose-files").addEventListener("click", () => fileInput.click());
fileInput.addEventListener("change", () => {
  uploadAll([...fileInput.files]);
  fileInput.value = "";
});
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("over");
  });
}
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("over");
  uploadAll([...(event.dataTransfer?.files || [])]);
});
// A file dropped beside the zone would otherwise be opened by the browser, leaving the page.
addEventListener("dragover", (event) => event.preventDefault());
addEventListener("drop", (event) => event.preventDefault());
addEventListener("hashchange", showChosen);

documentsListen(onDocumentFrame);
await loadCollections();
await showChosen();
document.body.dataset.ready = "true";
