// What the collections page and the chat page's attachments share about documents: the
// /ws/documents/ socket (docs/protocol.md, "Documents socket"), how a document's frame changes
// it, how its state reads, and uploading a file with its progress.

import { LiveSocket } from "../wizweb/socket.js";

// Documents as the API shows them (docs/api.md): {id, name, size, kind, pages, tokens, state,
// error, progress: {done, total}}. A socket frame changes one in place.
export function documentApply(doc, frame) {
  if (frame.type === "document.progress") {
    doc.state = frame.state;
    doc.progress = { done: frame.pages_done, total: frame.pages_total };
  } else if (frame.type === "document.ready") {
    doc.state = "ready";
    doc.pages = frame.pages;
    doc.tokens = frame.tokens;
    doc.error = "";
  } else if (frame.type === "document.failed") {
    doc.state = "failed";
    doc.error = frame.error;
  }
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

// "Reading… page 12 of 60", "Waiting to be read…", "Ready", or the failure sentence.
export function documentProgress(doc) {
  if (doc.state === "uploading") return doc.sent == null ? "Uploading…" : `Uploading… ${doc.sent} %`;
  if (doc.state === "queued") return "Waiting to be read…";
  if (doc.state === "indexing") {
    const { done = 0, total = 0 } = doc.progress || {};
    return total ? `Reading… page ${done.toLocaleString()} of ${total.toLocaleString()}` : "Reading…";
  }
  if (doc.state === "failed") return doc.error || "This file could not be read.";
  return "Ready";
}

// Where the reading is, 0 to 1, or null when it cannot be told (a file without pages).
export function documentFraction(doc) {
  if (doc.state === "uploading") return doc.sent == null ? null : doc.sent / 100;
  if (doc.state === "indexing" && doc.progress?.total) return doc.progress.done / doc.progress.total;
  if (doc.state === "queued") return 0;
  return null;
}

function csrfToken() {
  const field = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (field) return field.value;
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
}

// POST a file as multipart `file`; onProgress(percent) while it is sent. Resolves to
// {ok, data, message} as api.js's apiRequest does (XMLHttpRequest, since fetch cannot tell
// how far an upload has gone).
export function uploadFile(url, file, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.setRequestHeader("X-CSRFToken", csrfToken());
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(Math.floor((100 * event.loaded) / event.total));
    });
    request.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(request.responseText);
      } catch {
        data = null;
      }
      const ok = request.status >= 200 && request.status < 300;
      let message = ok ? "" : data?.error?.message || `The server answered ${request.status}; try again.`;
      if (request.status === 401) message = "You are logged out; reload the page to log in again.";
      resolve({ ok, status: request.status, data, message });
    });
    request.addEventListener("error", () =>
      resolve({ ok: false, status: 0, data: null, message: "The server cannot be reached; check the connection and try again." }),
    );
    const body = new FormData();
    body.append("file", file);
    request.send(body);
  });
}

// Listen to /ws/documents/ through the pages' one LiveSocket (ping, backoff): onFrame(frame)
// for every frame, again from the state frames after a reconnect (the server sends the 50
// newest documents' state on connect).
export function documentsListen(onFrame) {
  const socket = new LiveSocket("/ws/documents/", {
    onFrame,
    onOpen: () => (document.body.dataset.documentsSocket = "open"),
    onClose: () => (document.body.dataset.documentsSocket = "closed"),
  });
  socket.connect();
  return socket;
}
