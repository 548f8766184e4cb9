// The settings of the open conversation (model, system prompt, sampling; docs/frontend.md),
// sent with every prompt as its `options`.
// chat.js asks currentOptions() and currentModel(); when they change, this module dispatches
// a "wiz:settings" event on document.

const pageData = JSON.parse(document.getElementById("page-data").textContent);
let settings = { ...(pageData.settings || {}) };

// The options for the next prompt: the saved settings, without empty values.
export function currentOptions() {
  return Object.fromEntries(
    Object.entries(settings).filter(([, value]) => value !== null && value !== ""),
  );
}

// The model the next prompt goes to ({name, context_window, default}), or null when none is ready.
export function currentModel() {
  const models = pageData.models || [];
  return (
    models.find((m) => m.name === settings.model) || models.find((m) => m.default) || models[0] || null
  );
}

// chat.js tells this module when a new conversation got its id, so settings chosen before the
// first prompt can be saved with it.
export function settingsAttach(conversationId) {
  pageData.conversation = conversationId;
}
