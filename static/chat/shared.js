// A shared conversation's page (templates/chat/shared.html): its answers and their thoughts,
// written as markdown, rendered as on the chat page (markdown.js sanitises them); prompts stay
// the text they are.

import { renderMarkdown } from "./markdown.js";

for (const content of document.querySelectorAll("[data-markdown=true]")) {
  renderMarkdown(content, content.textContent);
}
