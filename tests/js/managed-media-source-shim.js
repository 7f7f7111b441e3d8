// A stand-in for Safari's ManagedMediaSource (iPhone, iPad), for Chromium, which lacks
// it: the standard MediaSource is hidden, as on iOS, and a subclass of it behaves as
// Safari documents the managed one:
// - it opens only for a <video> with disableRemotePlayback set (else it never opens);
// - `streaming` is false until `startstreaming`; the browser takes turns asking for
//   media (`startstreaming`) and to hold it (`endstreaming`) — Safari does so when it has
//   enough buffered or saves power; here it holds for 1.5 s every 5 s, so a live player
//   meets it often;
// - isTypeSupported is its own static method.
// window.__mms counts what the page did, for the test to check.
(() => {
  const Standard = window.MediaSource;
  if (!Standard) return;
  const log = (window.__mms = {
    created: 0, appends: 0, appends_while_held: 0, appends_after_resume: 0,
    holds: 0, resumes: 0, refused_without_disable: 0,
  });
  const managed = new Map(); // blob URL -> source
  let current = null;

  class ManagedMediaSource extends Standard {
    #streaming = false;
    constructor() {
      super();
      log.created++;
      current = this;
      this.addEventListener("sourceopen", () => this.#ask(true));
    }
    get streaming() { return this.#streaming; }
    static isTypeSupported(type) { return Standard.isTypeSupported(type); }
    #ask(streaming) {
      if (this.readyState !== "open") return;
      this.#streaming = streaming;
      if (streaming) log.resumes++; else log.holds++;
      this.dispatchEvent(new Event(streaming ? "startstreaming" : "endstreaming"));
      setTimeout(() => this.#ask(!streaming), streaming ? 5000 : 1500);
    }
  }

  const createObjectURL = URL.createObjectURL;
  URL.createObjectURL = function (object) {
    const url = createObjectURL.call(URL, object);
    if (object instanceof ManagedMediaSource) managed.set(url, object);
    return url;
  };
  const src = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, "src");
  Object.defineProperty(HTMLMediaElement.prototype, "src", {
    configurable: true,
    get() { return src.get.call(this); },
    set(url) {
      if (managed.has(url) && !this.disableRemotePlayback) {
        log.refused_without_disable++;
        return; // Safari: the source never opens
      }
      src.set.call(this, url);
    },
  });
  const appendBuffer = SourceBuffer.prototype.appendBuffer;
  SourceBuffer.prototype.appendBuffer = function (data) {
    log.appends++;
    if (current && !current.streaming) log.appends_while_held++;
    if (log.holds > 0 && current && current.streaming) log.appends_after_resume++;
    return appendBuffer.call(this, data);
  };
  delete window.MediaSource;
  Object.defineProperty(window, "ManagedMediaSource", {
    configurable: true, writable: true, value: ManagedMediaSource,
  });
})();
