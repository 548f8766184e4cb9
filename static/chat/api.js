// Calls from the chat page to its own JSON API (docs/api.md), used by sidebar.js and settings.js.
// A browser session must send the page's CSRF token with every change; errors come back as the
// API's own sentence, so the page can show it as it is.

function csrfToken() {
  const field = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (field) return field.value;
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
  return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : "";
}

// {ok, status, data, code, message}: never throws, so callers only show `message` on failure.
export async function apiRequest(url, { method = "GET", body, keepalive = false } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    if (typeof body !== "string") body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body, keepalive, credentials: "same-origin" });
  } catch {
    return {
      ok: false,
      status: 0,
      data: null,
      code: "offline",
      message: "The server cannot be reached; check the connection and try again.",
    };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.ok) return { ok: true, status: response.status, data, code: null, message: "" };
  const code = data?.error?.code || null;
  let message = data?.error?.message || `The server answered ${response.status}; try again.`;
  if (response.status === 401) message = "You are logged out; reload the page to log in again.";
  return { ok: false, status: response.status, data, code, message };
}
