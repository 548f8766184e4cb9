// The API keys page: copy the one-time key, and ask before revoking a key.

const copyButton = document.getElementById("copy-key");
const copyStatus = document.getElementById("copy-key-status");

// A page opened over plain http at a LAN address is not a secure context and has no
// navigator.clipboard; selecting the text and execCommand("copy") works there.
async function copyText(element) {
  const text = element.textContent;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents(element);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

copyButton?.addEventListener("click", async () => {
  const copied = await copyText(document.getElementById(copyButton.dataset.copy));
  copyStatus.textContent = copied ? "Copied." : "Selected: press Ctrl+C to copy.";
});

const dialog = document.getElementById("revoke-dialog");
let confirmed = null;
for (const form of document.querySelectorAll(".revoke-form")) {
  form.addEventListener("submit", (event) => {
    if (confirmed === form) return;
    event.preventDefault();
    document.getElementById("revoke-name").textContent = form.dataset.name;
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "revoke") {
          form.querySelector("button").focus();
          return;
        }
        confirmed = form;
        form.requestSubmit();
      },
      { once: true },
    );
    dialog.showModal();
  });
}
