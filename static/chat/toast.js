// Short notes at the bottom of the chat page ("Copied the answer.", "Renamed to …", "Deleted …"):
// one polite live region, the newest three notes, each gone after a few seconds.

const region = document.getElementById("toasts");
const SHOW_MS = 4000;
const MOST = 3;

export function toast(text, { error = false } = {}) {
  const note = document.createElement("div");
  note.className = error ? "toast error" : "toast";
  note.textContent = text;
  region.append(note);
  while (region.children.length > MOST) region.firstElementChild.remove();
  setTimeout(() => note.remove(), SHOW_MS);
}
