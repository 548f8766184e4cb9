// The sidebar of the chat page: the user's conversations (docs/frontend.md). The first page is
// in the HTML; later pages and search results come from /api/conversations/. Each entry has a
// small menu: rename, delete, export as Markdown or JSON. chat.js calls sidebarShow() when a
// conversation is created or renamed.

import { apiRequest } from "./api.js";
import { toast } from "./toast.js";

const aside = document.getElementById("sidebar");
const mainList = document.getElementById("conversation-list");
const resultsList = document.getElementById("search-results");
const scroller = document.getElementById("sidebar-scroll");
const itemTemplate = document.getElementById("conversation-item");
const loadMoreButton = document.getElementById("load-more");
const listEnd = document.getElementById("list-end");
const searchBox = document.getElementById("conversation-search");
const searchStatus = document.getElementById("search-status");
const errorLine = document.getElementById("sidebar-error");
const importButton = document.getElementById("import-button");
const importFile = document.getElementById("import-file");
const deleteDialog = document.getElementById("delete-dialog");
const deleteTitle = document.getElementById("delete-title");
const toggle = aside.querySelector(".sidebar-toggle");

const PAGE_SIZE = Number(aside.dataset.pageSize) || 50;
const SEARCH_DELAY_MS = 250;

// A feed is one list and how to load its next page: the whole history, or one search.
const historyFeed = { list: mainList, query: "", more: mainList.dataset.more === "true", loading: false };
let search = null;

function activeFeed() {
  return search || historyFeed;
}

function entriesIn(list) {
  return list.querySelectorAll("li[data-conversation]");
}

function entriesFor(id) {
  return aside.querySelectorAll(`li[data-conversation="${CSS.escape(id)}"]`);
}

function titleOf(entry) {
  return entry.querySelector("a.title").textContent;
}

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = !message;
}

function setTitle(entry, title) {
  const shown = title || "Untitled";
  entry.querySelector("a.title").textContent = shown;
  entry.querySelector(".item-menu-button").setAttribute("aria-label", `Actions for ${shown}`);
}

function setPinned(entry, pinned) {
  if (pinned) entry.dataset.pinned = "true";
  else delete entry.dataset.pinned;
  entry.querySelector("[data-action=pin]").textContent = pinned ? "Unpin" : "Pin";
}

// Where the server lists it: pinned ones first, then the most recently written to.
function sortKey(entry) {
  return [entry.dataset.pinned === "true" ? 1 : 0, Date.parse(entry.dataset.updated) || 0];
}

function comesBefore(a, b) {
  const [pinnedA, updatedA] = sortKey(a);
  const [pinnedB, updatedB] = sortKey(b);
  return pinnedA !== pinnedB ? pinnedA > pinnedB : updatedA >= updatedB;
}

function place(entry) {
  const after = [...entriesIn(mainList)].find((other) => other !== entry && comesBefore(entry, other));
  if (after) {
    if (entry.nextElementSibling !== after) mainList.insertBefore(entry, after);
  } else if (!historyFeed.more || entry.parentElement === mainList) {
    mainList.append(entry); // the end of what is shown
  }
}

function newEntry(id, title, { pinned = false, updated = new Date().toISOString() } = {}) {
  const entry = itemTemplate.content.firstElementChild.cloneNode(true);
  entry.dataset.conversation = id;
  entry.dataset.updated = updated;
  setPinned(entry, pinned);
  entry.querySelector("a.title").href = `/c/${id}/`;
  const base = `/api/conversations/${id}/export`;
  entry.querySelector("[data-action=export-md]").href = `${base}?format=md`;
  entry.querySelector("[data-action=export-json]").href = `${base}?format=json`;
  setTitle(entry, title);
  if (location.pathname === `/c/${id}/`) {
    entry.classList.add("current");
    entry.setAttribute("aria-current", "page");
  }
  return entry;
}

// Show a conversation at its place in the list (new ones first) and mark it as the open one.
export function sidebarShow(id, title, { current = true } = {}) {
  let found = false;
  for (const entry of entriesFor(id)) {
    setTitle(entry, title);
    if (entry.parentElement === mainList) found = true;
  }
  if (!found) {
    mainList.querySelector("li.empty")?.remove();
    const entry = newEntry(id, title);
    mainList.prepend(entry);
    place(entry); // after the pinned ones
  }
  if (!current) return;
  document.title = `${title || "Conversation"} · Wiz Web`;
  for (const other of aside.querySelectorAll("li.current")) {
    other.classList.remove("current");
    other.removeAttribute("aria-current");
  }
  for (const entry of entriesFor(id)) {
    entry.classList.add("current");
    entry.setAttribute("aria-current", "page");
  }
}

// A conversation deleted (here or on another page of the user) leaves every list.
export function sidebarRemove(id) {
  for (const entry of entriesFor(id)) entry.remove();
  showEmpty();
}

function showEmpty() {
  if (!entriesIn(mainList).length && !historyFeed.more && !mainList.querySelector("li.empty")) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = "No conversations yet.";
    mainList.append(empty);
  }
}

// Move a conversation that was just written to to the top of the list, as the server orders it.
export function sidebarRaise(id) {
  const updated = new Date().toISOString();
  for (const entry of entriesFor(id)) entry.dataset.updated = updated;
  const entry = [...entriesFor(id)].find((e) => e.parentElement === mainList);
  if (entry) place(entry);
}

// --- Paging -------------------------------------------------------------------------------

function showLoadMore() {
  const feed = activeFeed();
  loadMoreButton.hidden = !feed.more;
  loadMoreButton.disabled = feed.loading;
  loadMoreButton.textContent = feed.loading ? "Loading…" : "Load more";
}

async function loadMore() {
  const feed = activeFeed();
  if (feed.loading || !feed.more) return;
  feed.loading = true;
  showLoadMore();
  // The page is counted from the entries shown rather than remembered: conversations created
  // at the top or deleted meanwhile shift the server's pages, so this asks for the page that
  // holds the next entry and skips the ones already shown. Nothing is missed or repeated.
  const page = Math.floor(entriesIn(feed.list).length / PAGE_SIZE) + 1;
  const params = new URLSearchParams({ page: String(page) });
  if (feed.query) params.set("q", feed.query);
  const answer = await apiRequest(`/api/conversations/?${params}`);
  feed.loading = false;
  if (feed !== activeFeed()) return; // the search changed while this page was on its way
  if (answer.ok) {
    showError("");
    for (const conversation of answer.data.results) {
      if (!feed.list.querySelector(`li[data-conversation="${CSS.escape(conversation.id)}"]`)) {
        feed.list.append(
          newEntry(conversation.id, conversation.title, {
            pinned: conversation.pinned,
            updated: conversation.updated_at,
          }),
        );
      }
    }
    feed.more = Boolean(answer.data.next);
    if (feed === search && page === 1) describeResults(answer.data.count);
  } else if (answer.code === "invalid_page") {
    feed.more = false; // fewer pages than shown entries suggest: some were deleted meanwhile
  } else {
    showError(answer.message);
    showLoadMore();
    return; // no retry loop while the server refuses; "Load more" tries again
  }
  showLoadMore();
  watchEnd();
}

// The observer reports only changes. Observing afresh reports where the end is now: if it is
// still in view (a tall screen, or a page of entries shown already), the next page loads too.
const observer = new IntersectionObserver(
  (records) => {
    if (records[records.length - 1].isIntersecting) loadMore();
  },
  { root: scroller, rootMargin: "0px 0px 200px 0px" },
);

function watchEnd() {
  observer.unobserve(listEnd);
  observer.observe(listEnd);
}
watchEnd();
loadMoreButton.addEventListener("click", loadMore);

// --- Search -------------------------------------------------------------------------------

let searchTimer = 0;

function describeResults(count) {
  const query = search.query;
  searchStatus.textContent =
    count === 0
      ? `No conversation matches “${query}”.`
      : `${count} conversation${count === 1 ? " matches" : "s match"} “${query}”.`;
}

function runSearch() {
  const query = searchBox.value.trim();
  if (query === (search?.query || "")) return;
  if (!query) {
    search = null;
    resultsList.replaceChildren();
    resultsList.hidden = true;
    mainList.hidden = false;
    searchStatus.textContent = "";
    showLoadMore();
    return;
  }
  search = { list: resultsList, query, more: true, loading: false };
  resultsList.replaceChildren();
  resultsList.hidden = false;
  mainList.hidden = true;
  searchStatus.textContent = "Searching…";
  scroller.scrollTop = 0;
  loadMore();
}

searchBox.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS);
});
// Escape or the clear button empties a search box at once; the list comes back without waiting.
searchBox.addEventListener("search", () => {
  clearTimeout(searchTimer);
  runSearch();
});
searchBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  }
});

// --- Each entry's menu: rename, delete, export ----------------------------------------------

function closeMenus(except = null) {
  for (const menu of aside.querySelectorAll(".item-menu:not([hidden])")) {
    if (menu === except) continue;
    menu.hidden = true;
    menu.closest("li").querySelector(".item-menu-button").setAttribute("aria-expanded", "false");
  }
}

function toggleMenu(entry) {
  const menu = entry.querySelector(".item-menu");
  const button = entry.querySelector(".item-menu-button");
  closeMenus(menu);
  menu.hidden = !menu.hidden;
  button.setAttribute("aria-expanded", String(!menu.hidden));
  if (!menu.hidden) menu.querySelector("button, a").focus();
}

function startRename(entry) {
  closeMenus();
  const link = entry.querySelector("a.title");
  const button = entry.querySelector(".item-menu-button");
  const before = titleOf(entry);
  const input = document.createElement("input");
  input.className = "rename";
  input.value = before;
  input.maxLength = 200;
  input.setAttribute("aria-label", `New title for ${before}`);
  link.hidden = true;
  link.after(input);
  input.focus();
  input.select();
  let finished = false;
  async function finish(save, { refocus = true } = {}) {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    input.remove();
    link.hidden = false;
    if (refocus) button.focus();
    if (!save || !title || title === before) return;
    const id = entry.dataset.conversation;
    for (const each of entriesFor(id)) setTitle(each, title);
    const answer = await apiRequest(`/api/conversations/${id}/`, { method: "PATCH", body: { title } });
    if (answer.ok) {
      showError("");
      toast(`Renamed to “${title}”.`);
      if (location.pathname === `/c/${id}/`) document.title = `${title} · Wiz Web`;
    } else {
      for (const each of entriesFor(id)) setTitle(each, before);
      showError(answer.message);
    }
  }
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      finish(event.key === "Enter");
    }
  });
  // Leaving the field keeps what was typed, as renaming a file does; Escape is the way out.
  // The focus stays wherever it went (a click elsewhere must not be undone).
  input.addEventListener("blur", () => finish(true, { refocus: false }));
}

async function togglePin(entry) {
  closeMenus();
  const id = entry.dataset.conversation;
  const pinned = entry.dataset.pinned !== "true";
  const answer = await apiRequest(`/api/conversations/${id}/`, { method: "PATCH", body: { pinned } });
  if (!answer.ok) {
    showError(answer.message);
    return;
  }
  showError("");
  for (const each of entriesFor(id)) setPinned(each, pinned);
  const shown = [...entriesFor(id)].find((e) => e.parentElement === mainList);
  if (shown) place(shown);
  else if (pinned) mainList.prepend(newEntry(id, titleOf(entry), { pinned, updated: answer.data.updated_at }));
  toast(`${pinned ? "Pinned" : "Unpinned"} “${titleOf(entry)}”.`);
  entry.querySelector(".item-menu-button").focus();
}

function confirmDelete(entry) {
  closeMenus();
  const id = entry.dataset.conversation;
  deleteTitle.textContent = titleOf(entry);
  deleteDialog.returnValue = "";
  deleteDialog.addEventListener(
    "close",
    async () => {
      if (deleteDialog.returnValue !== "delete") {
        entry.querySelector(".item-menu-button").focus();
        return;
      }
      const answer = await apiRequest(`/api/conversations/${id}/`, { method: "DELETE" });
      if (!answer.ok && answer.status !== 404) {
        showError(answer.message);
        return;
      }
      showError("");
      if (location.pathname === `/c/${id}/`) {
        location.assign("/");
        return;
      }
      toast(`Deleted “${titleOf(entry)}”.`);
      const next = entry.nextElementSibling || entry.previousElementSibling;
      sidebarRemove(id);
      (next?.querySelector("a.title") || searchBox).focus();
    },
    { once: true },
  );
  deleteDialog.showModal();
}

// --- Sharing: a read-only link, for everyone logged in or chosen users (docs/frontend.md) ---

const shareDialog = document.getElementById("share-dialog");
const shareForm = document.getElementById("share-form");
const shareUsers = document.getElementById("share-users");
const shareLink = document.getElementById("share-link");
const shareUrl = document.getElementById("share-url");
const shareError = document.getElementById("share-error");
const shareRevoke = document.getElementById("share-revoke");
let sharing = null; // the conversation id the dialog is for

function showShare(share) {
  shareLink.hidden = !share;
  shareRevoke.hidden = !share;
  if (!share) return;
  shareUrl.href = share.url;
  shareUrl.textContent = new URL(share.url, location.href).href;
  shareForm.elements["share-to"].value = share.everyone ? "everyone" : "users";
  shareUsers.value = share.users.join(", ");
}

async function openShare(entry) {
  closeMenus();
  sharing = entry.dataset.conversation;
  document.getElementById("share-title").textContent = titleOf(entry);
  shareError.textContent = "";
  shareUsers.value = "";
  shareForm.elements["share-to"].value = "everyone";
  showShare(null);
  shareDialog.showModal();
  const answer = await apiRequest(`/api/conversations/${sharing}/share`);
  if (answer.ok) showShare(answer.data);
}

shareForm.addEventListener("submit", async (event) => {
  event.preventDefault(); // the dialog stays open to show the link
  const everyone = shareForm.elements["share-to"].value === "everyone";
  const users = everyone ? [] : shareUsers.value.split(",").map((u) => u.trim()).filter(Boolean);
  const answer = await apiRequest(`/api/conversations/${sharing}/share`, {
    method: "PUT",
    body: { everyone, users },
  });
  if (!answer.ok) {
    shareError.textContent = answer.message;
    return;
  }
  shareError.textContent = "";
  showShare(answer.data);
  toast(everyone ? "Shared with everyone logged in." : `Shared with ${users.join(", ")}.`);
});
shareUsers.addEventListener("input", () => {
  shareForm.elements["share-to"].value = "users";
});
shareRevoke.addEventListener("click", async () => {
  const answer = await apiRequest(`/api/conversations/${sharing}/share`, { method: "DELETE" });
  if (!answer.ok) {
    shareError.textContent = answer.message;
    return;
  }
  showShare(null);
  toast("Revoked the link: it opens nothing now.");
});
document.getElementById("share-close").addEventListener("click", () => shareDialog.close());

aside.addEventListener("click", (event) => {
  const target = event.target.closest("button, a");
  const entry = target?.closest("li[data-conversation]");
  if (!target || !entry) return;
  if (target.classList.contains("item-menu-button")) {
    toggleMenu(entry);
  } else if (target.dataset.action === "pin") {
    togglePin(entry);
  } else if (target.dataset.action === "share") {
    openShare(entry);
  } else if (target.dataset.action === "rename") {
    startRename(entry);
  } else if (target.dataset.action === "delete") {
    confirmDelete(entry);
  } else if (target.dataset.action?.startsWith("export")) {
    closeMenus(); // the link downloads by itself
  }
});

aside.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const menu = event.target.closest(".item-menu");
  if (!menu) return;
  closeMenus();
  menu.closest("li").querySelector(".item-menu-button").focus();
});

document.addEventListener("click", (event) => {
  if (!event.target.closest(".item-menu, .item-menu-button")) closeMenus();
});

// --- Import --------------------------------------------------------------------------------

importButton.addEventListener("click", () => importFile.click());
importFile.addEventListener("change", async () => {
  const file = importFile.files[0];
  importFile.value = ""; // so that choosing the same file again is noticed
  if (!file) return;
  const text = await file.text();
  try {
    JSON.parse(text);
  } catch {
    showError(`${file.name} is not JSON; choose a file made by “Export JSON”.`);
    return;
  }
  importButton.disabled = true;
  const answer = await apiRequest("/api/conversations/", { method: "POST", body: text });
  importButton.disabled = false;
  if (!answer.ok) {
    showError(answer.message);
    return;
  }
  location.assign(`/c/${answer.data.id}/`);
});

// --- Phone layout: the list folds behind a "Conversations" button ----------------------------

toggle.addEventListener("click", () => {
  const open = aside.classList.toggle("open");
  toggle.setAttribute("aria-expanded", String(open));
});

showLoadMore();
// Words typed before this module ran, or put back by the browser on "back", are searched now.
if (searchBox.value.trim()) runSearch();
