// A conversation as the chat page holds it: a tree of messages (pure data, no DOM, so it is
// tested on its own in a browser, tests/chat/test_frontend_modules.py).
//
// Regenerating an answer or editing a prompt adds a sibling beside the old message (same
// parent). The page shows one branch, from the first message down, choosing at each fork the
// version the reader picked (‹ 2/3 ›) or else the one leading to the newest message.

// A prompt's size before the model's tokenizer has seen it: about 3.5 characters a token for
// English text in the tokenizers of common models; the meter shows real counts once answered.
export const CHARS_PER_TOKEN = 3.5;
// What a chat template adds around one turn (role markers), in tokens, roughly.
export const TURN_OVERHEAD = 8;

// The state a message is in once its `done` frame says how it ended.
export const STATE_OF = { stop: "done", length: "done", tool_calls: "done", aborted: "aborted", error: "failed" };

export const isUnfinished = (message) => message.state === "queued" || message.state === "running";

export function estimateTokens(text) {
  return text ? Math.ceil(text.length / CHARS_PER_TOKEN) + TURN_OVERHEAD : 0;
}

const key = (parent) => parent || "";

export class MessageTree {
  constructor() {
    this.nodes = new Map(); // message id -> the message as the API shows it (docs/api.md)
    this.children = new Map(); // parent id ("" for the first turns) -> child ids, oldest first
    this.chosen = new Map(); // parent id ("" for the first turns) -> the child shown
  }

  get(id) {
    return this.nodes.get(id);
  }

  has(id) {
    return this.nodes.has(id);
  }

  add(message) {
    this.nodes.set(message.id, message);
    const siblings = this.children.get(key(message.parent)) || [];
    if (!siblings.includes(message.id)) siblings.push(message.id);
    this.children.set(key(message.parent), siblings);
  }

  // The versions of a message: the messages that share its parent, oldest first.
  siblings(id) {
    return this.children.get(key(this.nodes.get(id).parent)) || [id];
  }

  // Show this version at its fork.
  choose(id) {
    this.chosen.set(key(this.nodes.get(id).parent), id);
  }

  // Show `child` under `parent` (null for the first turn), even before the child is added.
  chooseUnder(parent, child) {
    this.chosen.set(key(parent), child);
  }

  // The branch shown: from the first turn down, at each fork the child the reader chose, or
  // else the one leading to the newest message, so a reload shows the branch last written to.
  shownPath() {
    // Where the newest message under each message is in `nodes` (which holds them oldest
    // first); children come after their parents there, so one backward pass finds them all.
    const ids = [...this.nodes.keys()];
    const newest = new Map(ids.map((id, index) => [id, index]));
    for (let i = ids.length - 1; i >= 0; i--) {
      const parent = this.nodes.get(ids[i]).parent;
      if (parent && newest.has(parent)) newest.set(parent, Math.max(newest.get(parent), newest.get(ids[i])));
    }
    const path = [];
    let at = "";
    for (;;) {
      const forks = this.children.get(at);
      if (!forks || !forks.length) return path;
      let id = this.chosen.get(at);
      if (!forks.includes(id)) {
        id = forks.reduce((best, child) => (newest.get(child) > newest.get(best) ? child : best));
      }
      path.push(id);
      at = id;
    }
  }

  // The answer being written at the end of the branch shown, or null.
  streamingOnPath() {
    const path = this.shownPath();
    const last = path[path.length - 1];
    if (last && this.nodes.get(last).role === "assistant" && isUnfinished(this.nodes.get(last))) return last;
    return null;
  }

  // The tokens this branch uses now: the real count of its last answer (the whole prompt the
  // model read plus the answer) and estimates for what came after it, or an estimate of the
  // whole branch and the system prompt when nothing was answered yet.
  usedTokens(systemPrompt = "") {
    const path = this.shownPath();
    let used = null;
    let after = 0;
    for (let i = path.length - 1; i >= 0; i--) {
      const message = this.nodes.get(path[i]);
      if (message.role === "assistant" && message.usage) {
        used = message.usage.total_tokens;
        break;
      }
      after += estimateTokens(message.content);
    }
    if (used === null) return { tokens: after + estimateTokens(systemPrompt), exact: false };
    return { tokens: used + after, exact: after === 0 };
  }
}

// A message as its `done` frame leaves it (docs/protocol.md).
export function applyDone(message, frame) {
  Object.assign(message, {
    content: frame.content || "",
    reasoning: frame.reasoning || "",
    note: frame.note || "",
    state: STATE_OF[frame.finish_reason] || "done",
    finish_reason: frame.finish_reason,
    usage: frame.usage,
    timings: frame.timings,
    tool_calls: frame.tool_calls || [],
    trimmed: frame.trimmed || null,
    citations: frame.citations || [],
    error: frame.error || "",
    model: frame.model || message.model,
  });
}

// "position 3, about 40 s": a waiting answer's place, and the server's estimate of the wait.
export function queuePlace(frame) {
  const place = `position ${frame.position}`;
  const eta = frame.eta_s;
  if (eta == null) return place;
  const wait = eta < 90 ? `${eta} s` : `${Math.round(eta / 60)} min`;
  return `${place}, about ${wait}`;
}
