// The sidebar of the chat page: the user's conversations (docs/frontend.md).
// chat.js calls sidebarShow() when a conversation is created or renamed.

const sidebar = document.getElementById("conversation-list");

// Show a conversation at its place in the list (new ones first) and mark it as the open one.
export function sidebarShow(id, title, { current = true } = {}) {
  let entry = sidebar.querySelector(`li[data-conversation="${CSS.escape(id)}"]`);
  sidebar.querySelector("li.empty")?.remove();
  if (!entry) {
    entry = document.createElement("li");
    entry.dataset.conversation = id;
    const link = document.createElement("a");
    link.href = `/c/${id}/`;
    entry.append(link);
    sidebar.prepend(entry);
  }
  entry.querySelector("a").textContent = title || "Untitled";
  if (!current) return;
  for (const other of sidebar.querySelectorAll("li.current")) {
    other.classList.remove("current");
    other.removeAttribute("aria-current");
  }
  entry.classList.add("current");
  entry.setAttribute("aria-current", "page");
}
