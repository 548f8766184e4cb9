// One live socket for every page that has one (/ws/chat/, /ws/models/, /ws/documents/): JSON
// frames both ways, a ping every 20 s that must be answered within 10 s (a phone that leaves
// the Wi-Fi may never see its socket close), and reconnection after a drop with exponential
// backoff from 0.5 s to 15 s plus up to 250 ms of jitter, so that a restarted server is not met
// by every page in the same instant. On each (re)connection `onOpen` runs, where a page
// resubscribes to what it follows.

const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;
const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 15000;
const JITTER_MS = 250;

export class LiveSocket {
  // path: "/ws/chat/" and the like. onFrame(frame) gets every frame; onOpen() runs on each
  // connection; onClose() on each drop, before the next try is scheduled.
  constructor(path, { onFrame, onOpen = () => {}, onClose = () => {} }) {
    this.path = path;
    this.onFrame = onFrame;
    this.onOpen = onOpen;
    this.onClose = onClose;
    this.socket = null;
    this.retryDelay = FIRST_RETRY_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongDeadline = null;
    // Back at once when the network returns or the page is looked at again (a phone woken up).
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  // Sends a frame; false (and nothing sent) while the socket is not open.
  send(frame) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const opened = new WebSocket(`${scheme}://${location.host}${this.path}`);
    this.socket = opened;
    opened.addEventListener("open", () => {
      this.retryDelay = FIRST_RETRY_MS;
      this.keepAlive();
      this.onOpen();
    });
    opened.addEventListener("message", (event) => {
      // Any frame shows the connection is alive, not only the pong.
      clearTimeout(this.pongDeadline);
      this.pongDeadline = null;
      this.onFrame(JSON.parse(event.data));
    });
    opened.addEventListener("close", () => {
      if (this.socket !== opened) return;
      clearInterval(this.pingTimer);
      clearTimeout(this.pongDeadline);
      this.pongDeadline = null;
      this.onClose();
      this.retryTimer = setTimeout(() => this.connect(), this.retryDelay + Math.random() * JITTER_MS);
      this.retryDelay = Math.min(this.retryDelay * 2, LAST_RETRY_MS);
    });
  }

  keepAlive() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.isOpen) return;
      this.socket.send(JSON.stringify({ type: "ping" }));
      this.pongDeadline ??= setTimeout(() => this.socket?.close(), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  // Connect now rather than at the next scheduled try, unless connecting or open already.
  reconnectNow() {
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    this.retryDelay = FIRST_RETRY_MS;
    this.connect();
  }
}
