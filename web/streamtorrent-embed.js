// Drives a StreamTorrent <iframe> from the page that embeds it (docs/embed.md):
//   import { EmbeddedPlayer } from "https://YOUR-SERVER/streamtorrent-embed.js";
//   const player = new EmbeddedPlayer(document.querySelector("iframe"));
//   player.addEventListener("state", (e) => console.log(e.detail.state));
//   player.addEventListener("stats", (e) => console.log(e.detail.peer_share));
//   player.pause(); player.setVolume(0.5); player.goLive(); player.setLatency("high");
// Needs no WebAssembly: it only speaks the embed's postMessage protocol. Messages are
// accepted only from that iframe's window and origin.

const PREFIX = "streamtorrent:";

export class EmbeddedPlayer extends EventTarget {
  #iframe;
  #origin;
  #queue = [];

  /** `options.origin`: the embed's origin; by default the iframe's `src` origin. */
  constructor(iframe, options = {}) {
    super();
    if (!(iframe instanceof HTMLIFrameElement)) {
      throw new TypeError("new EmbeddedPlayer(iframe): iframe must be an <iframe> element");
    }
    this.#iframe = iframe;
    this.#origin = options.origin ?? new URL(iframe.src, location.href).origin;
    /** `true` once the embed said it is ready; commands sent before wait for it. */
    this.ready = false;
    /** The embed's last state: "connecting", "buffering", "playing", "paused", "offline"… */
    this.state = null;
    /** The embed's last stats (the stats contract of docs/embed.md). */
    this.stats = null;
    this.onMessage = (event) => this.#receive(event);
    window.addEventListener("message", this.onMessage);
  }

  play() { this.#command("play"); }
  pause() { this.#command("pause"); }
  mute() { this.#command("mute"); }
  unmute() { this.#command("unmute"); }
  /** `volume` from 0 to 1. */
  setVolume(volume) {
    if (typeof volume !== "number" || !(volume >= 0 && volume <= 1)) {
      throw new RangeError(`setVolume(volume): volume must be from 0 to 1, got ${volume}`);
    }
    this.#command("volume", volume);
  }
  goLive() { this.#command("goLive"); }
  /** `"low"`, `"normal"` or `"high"`. */
  setLatency(preset) {
    if (!["low", "normal", "high"].includes(preset)) {
      throw new RangeError(`setLatency(preset): "low", "normal" or "high", got ${preset}`);
    }
    this.#command("latency", preset);
  }
  /** Stops listening (the iframe itself stays). */
  destroy() { window.removeEventListener("message", this.onMessage); }

  #command(command, value) {
    const message = { type: `${PREFIX}command`, command, value };
    if (this.ready) this.#post(message); else this.#queue.push(message);
  }

  #post(message) {
    this.#iframe.contentWindow?.postMessage(message, this.#origin);
  }

  #receive(event) {
    if (event.source !== this.#iframe.contentWindow || event.origin !== this.#origin) return;
    const data = event.data;
    if (typeof data !== "object" || data === null || typeof data.type !== "string") return;
    switch (data.type) {
      case `${PREFIX}ready`:
        this.ready = true;
        this.#queue.splice(0).forEach((m) => this.#post(m));
        this.dispatchEvent(new CustomEvent("ready"));
        break;
      case `${PREFIX}state`:
        this.state = data.state;
        this.dispatchEvent(new CustomEvent("state", { detail: { state: data.state, message: data.message } }));
        break;
      case `${PREFIX}stats`:
        this.stats = data.stats;
        this.dispatchEvent(new CustomEvent("stats", { detail: data.stats }));
        break;
    }
  }
}
