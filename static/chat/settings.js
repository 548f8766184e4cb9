// The settings of the open conversation (model, system prompt, sampling; docs/frontend.md),
// sent with every prompt as its `options` and saved with the conversation.
// chat.js asks currentOptions() and currentModel(); when they change, this module dispatches
// a "wiz:settings" event on document.

import { apiRequest } from "./api.js";
import { pageData } from "./page-data.js";

const models = pageData.models || [];
const presets = new Map((pageData.presets || []).map((p) => [String(p.id), p]));

const panel = document.getElementById("settings");
const form = document.getElementById("settings-form");
const summary = document.getElementById("settings-summary");
const statusLine = document.getElementById("settings-status");
const modelSelect = document.getElementById("setting-model");
const modelNote = document.getElementById("model-note");
const systemBox = document.getElementById("setting-system-prompt");
const presetSelect = document.getElementById("setting-preset");
const presetSaveButton = document.getElementById("preset-save");
const presetDeleteButton = document.getElementById("preset-delete");
const presetDefaultBox = document.getElementById("preset-default");
const presetDialog = document.getElementById("preset-dialog");
const presetName = document.getElementById("preset-name");
const jsonBox = document.getElementById("setting-json");
const reasoningSelect = document.getElementById("setting-reasoning");
const thinkingFields = [...form.querySelectorAll("[data-thinking]")];
const thinkingNote = document.getElementById("thinking-note");
const extraLine = document.getElementById("settings-extra");
const numberFields = new Map(
  [...form.querySelectorAll("input[type=number]")].map((input) => [input.name, input]),
);

const SAVE_DELAY_MS = 500;
const OPEN_KEY = "wiz:settings-open";

let conversation = pageData.conversation;
// Saved options the panel has no field for (set through the API: stop, min_p, a JSON schema…).
// They are kept, listed under the fields, and sent as they are.
let extras = {};

function defaultModel() {
  return models.find((m) => m.default) || models[0] || null;
}

function show(settings) {
  extras = {};
  const known = new Set(["model", "system_prompt", "response_format", "reasoning", ...numberFields.keys()]);
  for (const [key, value] of Object.entries(settings)) {
    if (!known.has(key)) extras[key] = value;
  }
  const saved = settings.model;
  const model = models.find((m) => m.name === saved) || defaultModel();
  modelSelect.value = model ? model.name : "";
  modelNote.hidden = !saved || model?.name === saved;
  if (!modelNote.hidden) {
    modelNote.textContent = model
      ? `“${saved}” is not ready; answers come from ${model.name} unless you pick another.`
      : `“${saved}” is not ready.`;
  }
  systemBox.value = settings.system_prompt || "";
  for (const [key, input] of numberFields) input.value = settings[key] ?? "";
  const format = settings.response_format;
  jsonBox.checked = format?.type === "json_object";
  reasoningSelect.value = settings.reasoning === true ? "on" : settings.reasoning === false ? "off" : "";
  if (format && !["json_object", "text"].includes(format.type)) extras.response_format = format;
  extraLine.hidden = Object.keys(extras).length === 0;
  extraLine.textContent = `Also saved with this conversation: ${Object.entries(extras)
    .map(([key, value]) => `${key} = ${JSON.stringify(value)}`)
    .join(", ")}.`;
  matchPreset();
  describe();
}

// The options for the next prompt: exactly what the panel shows. An empty field is left out,
// so the server's default (its placeholder) applies; a value out of range is sent as it is,
// and the server's answer names it (chat/options.py is the one place that checks options).
export function currentOptions() {
  const options = { ...extras };
  if (modelSelect.value) options.model = modelSelect.value;
  if (systemBox.value.trim()) options.system_prompt = systemBox.value;
  for (const [key, input] of numberFields) {
    if (input.value !== "") options[key] = Number(input.value);
  }
  if (jsonBox.checked) options.response_format = { type: "json_object" };
  if (reasoningSelect.value) options.reasoning = reasoningSelect.value === "on";
  return options;
}

// The model the next prompt goes to ({name, context_window, default}), or null when none is ready.
export function currentModel() {
  return models.find((m) => m.name === modelSelect.value) || null;
}

// The thinking fields are for a model that thinks. For one that does not they stay in view only
// while they hold a value, with a note: the server refuses such a prompt with a sentence, and
// the reader must be able to see and clear what it refers to.
function showThinking() {
  const model = currentModel();
  const options = currentOptions();
  const set = options.reasoning === true || "reasoning_budget" in options;
  const thinks = Boolean(model?.thinks);
  for (const field of thinkingFields) field.hidden = !thinks && !set;
  thinkingNote.hidden = thinks || !set;
  thinkingNote.textContent = model
    ? `${model.name} does not think: turn thinking to the default or off and clear the budget, or pick a thinking model.`
    : "";
}

// What differs from the defaults, on the closed panel's line (the model is the header's picker).
function describe() {
  showThinking();
  const options = currentOptions();
  const parts = [];
  for (const [key, label] of [
    ["temperature", "temperature"],
    ["top_p", "top p"],
    ["top_k", "top k"],
    ["max_tokens", "max tokens"],
    ["seed", "seed"],
    ["reasoning_budget", "thinking budget"],
  ]) {
    if (key in options) parts.push(`${label} ${options[key]}`);
  }
  if ("reasoning" in options) parts.push(options.reasoning ? "thinking on" : "thinking off");
  if (jsonBox.checked) parts.push("JSON");
  if (options.system_prompt) parts.push("system prompt");
  summary.textContent = parts.join(" · ") || "defaults";
}

function setStatus(text, { error = false } = {}) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", error);
}

// --- Saving ---------------------------------------------------------------------------------

let saveTimer = 0;
let unsaved = false;
let saving = Promise.resolve();

async function saveNow({ keepalive = false } = {}) {
  clearTimeout(saveTimer);
  if (!conversation || !unsaved) return;
  unsaved = false;
  const answer = await apiRequest(`/api/conversations/${conversation}/`, {
    method: "PATCH",
    body: { settings: currentOptions() },
    keepalive,
  });
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (answer.ok) {
    setStatus("");
    return;
  }
  setStatus(answer.message, { error: true });
  const key = /^Option '(\w+)'/.exec(answer.message)?.[1];
  const field = key && form.querySelector(`[name="${key}"]`);
  field?.setAttribute("aria-invalid", "true");
}

// Saves go one after another, so an older one never lands after a newer one.
function save(options) {
  saving = saving.then(() => saveNow(options));
  return saving;
}

function changed() {
  describe();
  document.dispatchEvent(new CustomEvent("wiz:settings"));
  // Before the first prompt there is no conversation to save to: the settings go with the
  // prompt and settingsAttach() saves them once the conversation exists.
  if (!conversation) return;
  unsaved = true;
  clearTimeout(saveTimer);
  saveTimer = setTimeout(save, SAVE_DELAY_MS);
}

// chat.js tells this module when a new conversation got its id, so settings chosen before the
// first prompt are saved with it.
export function settingsAttach(conversationId) {
  conversation = conversationId;
  pageData.conversation = conversationId;
  unsaved = true;
  return save();
}

// The model picker sits in the header, outside the form's subtree (form="settings-form"), so
// its events do not reach the form's listener.
modelSelect.addEventListener("input", () => {
  modelNote.hidden = true;
  changed();
});
form.addEventListener("input", (event) => {
  if (event.target === presetSelect || event.target === presetDefaultBox) return;
  if (event.target === systemBox) matchPreset();
  changed();
});
form.addEventListener("submit", (event) => event.preventDefault());
// A change typed less than SAVE_DELAY_MS before leaving the page is still saved.
addEventListener("pagehide", () => {
  if (unsaved) save({ keepalive: true });
});

// --- Presets --------------------------------------------------------------------------------

function matchPreset() {
  const text = systemBox.value;
  const chosen = presets.get(presetSelect.value);
  if (!chosen || chosen.text !== text) {
    const same = [...presets.values()].find((p) => p.text === text && text.trim());
    presetSelect.value = same ? String(same.id) : "";
  }
  presetDeleteButton.disabled = !presetSelect.value;
  showPresetDefault();
}

// "Start new chats with it": whether the chosen preset is the user's default.
function showPresetDefault() {
  const preset = presets.get(presetSelect.value);
  presetDefaultBox.disabled = !preset;
  presetDefaultBox.checked = Boolean(preset?.default);
}

function presetOption(preset) {
  const option = document.createElement("option");
  option.value = String(preset.id);
  option.textContent = preset.name;
  return option;
}

presetSelect.addEventListener("change", () => {
  const preset = presets.get(presetSelect.value);
  presetDeleteButton.disabled = !preset;
  showPresetDefault();
  if (!preset) return;
  systemBox.value = preset.text;
  changed();
});

presetDefaultBox.addEventListener("change", async () => {
  const preset = presets.get(presetSelect.value);
  if (!preset) return;
  const wanted = presetDefaultBox.checked;
  const answer = await apiRequest(`/api/presets/${preset.id}/`, {
    method: "PATCH",
    body: { default: wanted },
  });
  if (!answer.ok) {
    presetDefaultBox.checked = !wanted;
    setStatus(answer.message, { error: true });
    return;
  }
  for (const other of presets.values()) other.default = false;
  presets.set(String(preset.id), answer.data);
  setStatus(
    wanted
      ? `New chats start with the preset “${preset.name}”.`
      : `New chats start with no system prompt.`,
  );
});

presetSaveButton.addEventListener("click", () => {
  if (!systemBox.value.trim()) {
    setStatus("Write a system prompt first; a preset saves it.", { error: true });
    systemBox.focus();
    return;
  }
  presetName.value = presets.get(presetSelect.value)?.name || "";
  presetDialog.returnValue = "";
  presetDialog.showModal();
});

document.getElementById("preset-cancel").addEventListener("click", () => presetDialog.close("cancel"));

presetDialog.addEventListener("close", async () => {
  if (presetDialog.returnValue !== "save") {
    presetSaveButton.focus();
    return;
  }
  const answer = await apiRequest("/api/presets/", {
    method: "POST",
    body: { name: presetName.value, text: systemBox.value },
  });
  if (!answer.ok) {
    setStatus(answer.message, { error: true });
    return;
  }
  const preset = answer.data;
  presets.set(String(preset.id), preset);
  presetSelect.querySelector(`option[value="${preset.id}"]`)?.remove();
  // Kept in name order, as the server lists them.
  const after = [...presetSelect.options].find(
    (o) => o.value && o.textContent.localeCompare(preset.name) > 0,
  );
  presetSelect.insertBefore(presetOption(preset), after || null);
  presetSelect.value = String(preset.id);
  presetDeleteButton.disabled = false;
  showPresetDefault();
  setStatus(`Saved the preset “${preset.name}”.`);
  presetSaveButton.focus();
});

presetDeleteButton.addEventListener("click", async () => {
  const preset = presets.get(presetSelect.value);
  if (!preset) return;
  const answer = await apiRequest(`/api/presets/${preset.id}/`, { method: "DELETE" });
  if (!answer.ok && answer.status !== 404) {
    setStatus(answer.message, { error: true });
    return;
  }
  presets.delete(String(preset.id));
  presetSelect.querySelector(`option[value="${preset.id}"]`)?.remove();
  presetSelect.value = "";
  presetDeleteButton.disabled = true;
  showPresetDefault();
  // The text stays in the box, so a preset deleted by mistake can be saved again.
  setStatus(`Deleted the preset “${preset.name}”; the system prompt is unchanged.`);
  presetSelect.focus();
});

// --- The panel itself -------------------------------------------------------------------------

// Only ever opened here: a click on the summary before this module ran must not be undone.
if (localStorage.getItem(OPEN_KEY) === "true") panel.open = true;
panel.addEventListener("toggle", () => localStorage.setItem(OPEN_KEY, String(panel.open)));

show(pageData.settings || {});
