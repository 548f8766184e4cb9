// The colour theme of every page: the system's (prefers-color-scheme) until the reader presses
// the toggle in the top bar. A logged-in reader's choice is saved on their account (POST
// /account/theme/, whose URL and CSRF token the toggle carries), so it follows them to any
// browser; it also goes in the wiz_theme cookie for a year, for the logged-out pages (the login
// page). The server renders it as <html data-theme> (templates/base.html), so a page never
// flashes the other theme before this module runs.

const root = document.documentElement;
const toggle = document.getElementById("theme-toggle");
const systemDark = matchMedia("(prefers-color-scheme: dark)");

function isDark() {
  return root.dataset.theme ? root.dataset.theme === "dark" : systemDark.matches;
}

function show() {
  toggle.setAttribute("aria-pressed", String(isDark()));
}

function save(theme) {
  const url = toggle.dataset.saveUrl;
  if (!url) return;
  // keepalive: a click then at once another page still saves the choice.
  fetch(url, {
    method: "POST",
    headers: { "X-CSRFToken": toggle.dataset.csrf },
    body: new URLSearchParams({ theme }),
    keepalive: true,
  }).catch(() => {});
}

toggle.addEventListener("click", () => {
  const theme = isDark() ? "light" : "dark";
  root.dataset.theme = theme;
  document.cookie = `wiz_theme=${theme}; path=/; max-age=31536000; samesite=lax`;
  save(theme);
  show();
});
systemDark.addEventListener("change", show);
show();
