// The studio: capture a camera and microphone (or a screen), preview it, and publish it
// over WHIP (RFC 9725) to the ingest that served this page, with the channel's stream key.
// `window.studio` exposes the state for tests and for pages that embed this one.

const $ = (id) => document.getElementById(id);
const studio = (window.studio = { state: 'idle', kbps: 0, framesSent: 0, width: 0, height: 0 });
let stream = null;
let pc = null;
let resource = null;
let statsTimer = null;
let last = null;

function health(text, state) {
  $('health').textContent = text;
  document.body.dataset.state = state;
  studio.state = state;
}

async function capture() {
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  try {
    if ($('source').value === 'screen') {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 30 }, audio: true });
      if (!stream.getAudioTracks().length) {
        // Screens often come without sound: add the microphone if there is one.
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
        mic?.getAudioTracks().forEach((t) => stream.addTrack(t));
      }
    } else {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
        audio: true,
      });
    }
    $('preview').srcObject = stream;
    // "Stop sharing" (or an unplugged camera) ends the video: end the broadcast with it.
    stream.getVideoTracks()[0]?.addEventListener('ended', () => pc && stop());
    health('Ready: enter the stream key and go live.', 'ready');
  } catch (e) {
    health(`Cannot capture ${$('source').value}: ${e.message}`, 'error');
  }
}

/** Waits until ICE gathering completes (candidates go in the offer), 2 s at most. */
function gathered(peer) {
  if (peer.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => peer.iceGatheringState === 'complete' && resolve();
    peer.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 2000);
  });
}

/** Ends the session on the server too (else the channel stays claimed until it times out). */
function release() {
  if (resource) fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => {});
  resource = null;
  pc?.close();
  pc = null;
  clearInterval(statsTimer);
  last = null;
  $('go').disabled = false;
  $('stop').disabled = true;
  $('source').disabled = false;
}

function fail(text) {
  release();
  health(text, 'error');
}

async function goLive() {
  const key = $('key').value.trim();
  if (!key) return health("Enter the channel's stream key.", 'error');
  if (!stream) await capture();
  if (!stream) return;
  $('go').disabled = true;
  // Changing the source while live would stop the tracks being sent.
  $('source').disabled = true;
  last = null;
  health('Connecting…', 'connecting');
  const h264 = (RTCRtpSender.getCapabilities('video')?.codecs || []).filter(
    (c) => c.mimeType.toLowerCase() === 'video/h264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''),
  );
  if (!h264.length) return fail('This browser cannot send H.264 over WebRTC, which the channel needs.');
  pc = new RTCPeerConnection();
  const maxBitrate = Number($('bitrate').value) * 1000;
  const video = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly',
    streams: [stream],
    sendEncodings: [{ maxBitrate }],
  });
  video.setCodecPreferences(h264);
  const audio = stream.getAudioTracks()[0];
  if (audio) pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
  pc.addEventListener('connectionstatechange', () => {
    if (pc?.connectionState === 'connected') health('Live.', 'live');
    if (pc?.connectionState === 'failed') fail('The connection to the server failed.');
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch('/whip', {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
      body: pc.localDescription.sdp,
    });
    const body = await response.text();
    if (response.status !== 201) return fail(`Refused: ${body.trim()} (HTTP ${response.status})`);
    resource = new URL(response.headers.get('Location'), location.href).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
  } catch (e) {
    return fail(`Could not go live: ${e.message}`);
  }
  $('stop').disabled = false;
  statsTimer = setInterval(updateStats, 1000);
}

async function stop() {
  release();
  health('Stopped: the broadcast has ended.', 'stopped');
}

/** The health line: what is being sent, from the sender's own statistics. */
async function updateStats() {
  if (!pc) return;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    if (last) studio.kbps = Math.round(((r.bytesSent - last.bytes) * 8) / (r.timestamp - last.time));
    last = { bytes: r.bytesSent, time: r.timestamp };
    studio.framesSent = r.framesSent || 0;
    studio.width = r.frameWidth || 0;
    studio.height = r.frameHeight || 0;
    if (studio.state === 'live') {
      const size = studio.width ? ` · ${studio.width}×${studio.height}` : '';
      const fps = r.framesPerSecond ? ` · ${Math.round(r.framesPerSecond)} fps` : '';
      $('health').textContent = `Live · ${studio.kbps} kbit/s${size}${fps}`;
    }
  });
}

$('source').addEventListener('change', capture);
$('go').addEventListener('click', goLive);
$('stop').addEventListener('click', stop);
window.addEventListener('pagehide', () => resource && release());
capture();
