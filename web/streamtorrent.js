// StreamTorrent's player as an ES module (docs/embed.md):
//   import { Player } from "https://YOUR-SERVER/streamtorrent.js";
//   const player = new Player(video, { channel: "demo" });
// Loads the WebAssembly peer from beside this file, then exports its `Player` class with
// one default changed: `server` is where this module came from, not the embedding page.
import init, { Player as WasmPlayer } from "./peer-wasm.js";

await init({ module_or_path: new URL("./peer-wasm_bg.wasm", import.meta.url) });

const home = new URL(".", import.meta.url).origin;

export class Player extends WasmPlayer {
  constructor(video, options = {}) {
    super(video, { server: home, ...options });
  }
}
