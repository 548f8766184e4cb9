// The chat page's keyboard shortcuts, listed in the dialog that "?" opens (docs/frontend.md).
// Enter, Shift+Enter and Esc in the message box itself are chat.js's.

const dialog = document.getElementById("shortcuts-dialog");
const promptBox = document.getElementById("prompt");
const search = document.getElementById("conversation-search");

function typingIn(target) {
  return target.closest("input, textarea, select, [contenteditable=true]") !== null;
}

function openSidebar() {
  // On a phone the search box is folded away with the list.
  const toggle = document.querySelector(".sidebar-toggle");
  if (toggle?.getAttribute("aria-expanded") === "false" && getComputedStyle(toggle).display !== "none") {
    toggle.click();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (mod && !event.shiftKey && !event.altKey && key === "k") {
    event.preventDefault();
    openSidebar();
    search.focus();
    search.select();
  } else if (mod && event.shiftKey && key === "o") {
    event.preventDefault();
    location.assign("/");
  } else if (event.shiftKey && event.key === "Escape") {
    event.preventDefault();
    promptBox.focus();
  } else if (event.key === "?" && !mod && !typingIn(event.target) && !dialog.open) {
    event.preventDefault();
    dialog.showModal();
  }
});

document.getElementById("shortcuts-button").addEventListener("click", () => dialog.showModal());
