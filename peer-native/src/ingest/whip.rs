//! WHIP (RFC 9725): a publisher POSTs its SDP offer with `Authorization: Bearer
//! STREAM_KEY`, gets our answer (201, with the session's URL in `Location`), and sends
//! H.264 + Opus over WebRTC; `DELETE` on that URL ends it. Each session feeds an
//! [`ingest::RtpIngest`] and asks the sender for keyframes with RTCP PLI when it says so.
//! The same server serves the studio page (`/live`), so a browser can publish from it
//! without crossing origins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use ingest::{PublishRefusal, RtpIngest, RtpPacket, StreamKey};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::{Live, Shared, SILENCE_TIMEOUT};

/// Where publishers POST their offers.
pub const WHIP_PATH: &str = "/whip";
/// Largest SDP offer accepted (a browser's is 4-8 KB).
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// How long ICE gathering may take before we answer with what we have.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Media must start flowing this soon after the answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the session looks whether to ask for a keyframe.
const TICK: Duration = Duration::from_millis(100);

const STUDIO_HTML: &str = include_str!("../../../web/studio.html");
const STUDIO_JS: &str = include_str!("../../../web/studio.js");

/// The WHIP endpoint and the studio page.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let whip = Arc::new(Whip {
        shared,
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/live", get(studio_page))
        .route("/live/studio.js", get(studio_script))
        .route(WHIP_PATH, post(offer).options(preflight))
        .route(
            &format!("{WHIP_PATH}/{{session}}"),
            delete(end).options(preflight),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .with_state(whip)
}

struct Whip {
    shared: Arc<Shared>,
    /// Live sessions by their unguessable id, each with what ends it.
    sessions: Mutex<HashMap<String, Arc<Notify>>>,
}

async fn studio_page() -> Response {
    studio_file("text/html; charset=utf-8", STUDIO_HTML)
}

async fn studio_script() -> Response {
    studio_file("text/javascript; charset=utf-8", STUDIO_JS)
}

/// A file of the studio, compiled in; not cached, so an upgraded ingest serves its own.
fn studio_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// CORS, so WHIP clients on other origins (a site's own studio page) can publish.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "POST, DELETE, OPTIONS",
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type",
        ),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    cors(
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}\n"),
        )
            .into_response(),
    )
}

async fn offer(State(whip): State<Arc<Whip>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|key| StreamKey::new(key.trim()).ok());
    let Some(key) = key else {
        let mut response = refuse(
            StatusCode::UNAUTHORIZED,
            "a stream key is needed: Authorization: Bearer STREAM_KEY",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    if !whip.shared.knows(&key) {
        return wrong_key();
    }
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !is_sdp {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be application/sdp",
        );
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8");
    };
    if !sdp.contains("m=video") || !sdp.to_ascii_lowercase().contains("h264/90000") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the offer has no H.264 video; StreamTorrent takes H.264 (and Opus audio)",
        );
    }
    let live = match whip.shared.go_live(&key) {
        Ok(Ok(live)) => live,
        Ok(Err(e)) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(PublishRefusal::WrongKey) => return wrong_key(),
        Err(PublishRefusal::AlreadyLive) => {
            tracing::warn!("WHIP publish refused: the channel already has a publisher");
            return refuse(StatusCode::CONFLICT, "this channel already has a publisher");
        }
    };
    let channel = live.channel.clone();
    match answer(&whip, live, sdp).await {
        Ok((id, answer)) => {
            tracing::info!(%channel, "WHIP publisher live");
            let location = format!("{WHIP_PATH}/{id}");
            let mut response = (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/sdp")],
                answer,
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            cors(response)
        }
        Err(e) => {
            tracing::warn!(%channel, "WHIP offer failed: {e}");
            refuse(
                StatusCode::BAD_REQUEST,
                &format!("cannot answer this offer: {e}"),
            )
        }
    }
}

fn wrong_key() -> Response {
    tracing::warn!("WHIP publish refused: wrong stream key");
    let mut response = refuse(StatusCode::UNAUTHORIZED, "wrong stream key");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

async fn end(State(whip): State<Arc<Whip>>, Path(session): Path<String>) -> Response {
    let ended = whip
        .sessions
        .lock()
        .expect("no task panics holding the lock")
        .remove(&session);
    match ended {
        Some(stop) => {
            stop.notify_one();
            cors(StatusCode::OK.into_response())
        }
        None => refuse(StatusCode::NOT_FOUND, "no such WHIP session"),
    }
}

/// Events from the peer connection's callbacks, forwarded to the session task.
enum WhipEvent {
    Track(Arc<dyn TrackRemote>),
    Closed,
}

struct Handler {
    gathered: Arc<Notify>,
    events: mpsc::UnboundedSender<WhipEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            let _ = self.events.send(WhipEvent::Closed);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(WhipEvent::Track(track));
    }
}

/// A peer connection that receives H.264 and Opus (nothing else is offered back), its
/// events sent to `handler`.
async fn receiving_peer_connection(
    handler: Arc<Handler>,
) -> Result<impl PeerConnection + 'static, String> {
    let mut media = MediaEngine::default();
    let codec =
        |mime: &str, clock_rate, channels, fmtp: &str, payload_type| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type,
        };
    media
        .register_codec(
            codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
            RtpCodecKind::Audio,
        )
        .map_err(|e| e.to_string())?;
    media
        .register_codec(
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
            RtpCodecKind::Video,
        )
        .map_err(|e| e.to_string())?;
    // After the codecs, so that NACK and PLI feedback is offered for them.
    let registry =
        register_default_interceptors(Registry::new(), &mut media).map_err(|e| e.to_string())?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec!["0.0.0.0:0".to_owned()])
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// Answers `offer` and starts the session's task; returns its id and the answer.
async fn answer(whip: &Arc<Whip>, live: Live, offer: String) -> Result<(String, String), String> {
    let audio = sends_opus(&offer);
    let gathered = Arc::new(Notify::new());
    let (events_tx, events) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        gathered: gathered.clone(),
        events: events_tx,
    });
    let pc = receiving_peer_connection(handler).await?;
    let answered = async {
        let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| e.to_string())?;
        let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
        pc.set_local_description(answer)
            .await
            .map_err(|e| e.to_string())?;
        // Candidates go in the answer (WHIP clients need not trickle).
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.notified()).await;
        pc.local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| "no local description after setting it".to_owned())
    }
    .await;
    let answer = match answered {
        Ok(answer) => answer,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let id = hex::encode(rand::random::<[u8; 16]>());
    let stop = Arc::new(Notify::new());
    whip.sessions
        .lock()
        .expect("no task panics holding the lock")
        .insert(id.clone(), stop.clone());
    let whip = whip.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
        let channel = live.channel.clone();
        let outcome = session(live, audio, events, stop, whip.shared.stopping.clone()).await;
        let _ = pc.close().await;
        whip.sessions
            .lock()
            .expect("no task panics holding the lock")
            .remove(&session_id);
        match outcome {
            Ok(why) => tracing::info!(%channel, "WHIP publisher stopped ({why}); the channel ends"),
            Err(e) => tracing::warn!(%channel, "WHIP publisher dropped: {e}"),
        }
    });
    Ok((id, answer))
}

/// Whether an SDP offer sends Opus audio: an `m=audio` section, not disabled (port 0),
/// not `recvonly` or `inactive`, with an Opus payload.
fn sends_opus(sdp: &str) -> bool {
    sdp.split("\nm=").skip(1).any(|section| {
        let section = section.to_ascii_lowercase();
        section.starts_with("audio ")
            && !section.starts_with("audio 0 ")
            && !section.contains("a=recvonly")
            && !section.contains("a=inactive")
            && section.contains("opus/48000")
    })
}

/// A packet from one of the session's tracks.
struct Received {
    video: bool,
    packet: rtc::rtp::packet::Packet,
}

/// Runs one WHIP session until the publisher stops; returns why it ended.
async fn session(
    mut live: Live,
    audio: bool,
    mut events: mpsc::UnboundedReceiver<WhipEvent>,
    stop: Arc<Notify>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<&'static str, String> {
    let started = Instant::now();
    // Without audio in the offer there must be no audio track: MSE buffers only where every
    // track has media, so an empty one would stop playback.
    let mut ingest = RtpIngest::new(audio.then_some(2));
    let (packets_tx, mut packets) = mpsc::channel::<Received>(1024);
    let mut video: Option<(Arc<dyn TrackRemote>, u32)> = None;
    let mut last_packet = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let why = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(WhipEvent::Track(track)) => {
                    let kind = track.kind().await;
                    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
                    let mime = track.codec(ssrc).await.map(|c| c.mime_type.to_ascii_lowercase()).unwrap_or_default();
                    let is_video = kind == RtpCodecKind::Video;
                    let wanted = if is_video { MIME_TYPE_H264 } else { MIME_TYPE_OPUS };
                    if mime != wanted.to_ascii_lowercase() {
                        return Err(format!("a {mime} track; StreamTorrent takes H.264 video and Opus audio"));
                    }
                    if is_video {
                        video = Some((track.clone(), ssrc));
                    }
                    tokio::spawn(read_track(track, is_video, packets_tx.clone()));
                }
                Some(WhipEvent::Closed) | None => break "the connection closed",
            },
            received = packets.recv() => {
                let Some(Received { video: is_video, packet }) = received else { continue };
                last_packet = Instant::now();
                let rtp = RtpPacket {
                    sequence: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: &packet.payload,
                };
                // The arrival time anchors each track's clock: taken now, not before the wait.
                let now_ms = started.elapsed().as_millis() as u64;
                let result = if is_video { ingest.handle_video(now_ms, rtp) } else { ingest.handle_audio(now_ms, rtp) };
                result.map_err(|e| e.to_string())?;
                live.send_mp4(ingest.take_output()).await?;
            }
            _ = tick.tick() => {
                let silent = last_packet.elapsed();
                if silent > SILENCE_TIMEOUT && started.elapsed() > START_TIMEOUT {
                    return Err(format!("no media for {silent:?}"));
                }
            }
            _ = stop.notified() => break "DELETE",
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => break "shutting down",
        }
        if let Some((track, ssrc)) = &video {
            if ingest.poll_keyframe_request(started.elapsed().as_millis() as u64) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: *ssrc,
                };
                if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!("keyframe request not sent: {e}");
                }
            }
        }
    };
    ingest.finish(started.elapsed().as_millis() as u64);
    live.send_mp4(ingest.take_output()).await?;
    Ok(why)
}

/// Forwards a track's RTP packets to the session until the track ends.
async fn read_track(track: Arc<dyn TrackRemote>, video: bool, packets: mpsc::Sender<Received>) {
    while let Some(event) = track.poll().await {
        let sent = match event {
            TrackRemoteEvent::OnRtpPacket(packet) => packets.send(Received { video, packet }).await,
            TrackRemoteEvent::OnEnded => return,
            _ => Ok(()),
        };
        if sent.is_err() {
            return; // the session ended
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sends_opus;

    const VIDEO: &str =
        "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=sendonly\r\na=rtpmap:102 H264/90000\r\n";

    #[test]
    fn an_offer_sends_opus_only_with_a_live_audio_section() {
        let head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
        let audio =
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(sends_opus(&format!("{head}{audio}{VIDEO}")));
        assert!(!sends_opus(&format!("{head}{VIDEO}")), "video only");
        assert!(!sends_opus(&format!(
            "{head}{}{VIDEO}",
            audio.replace("sendonly", "inactive")
        )));
        assert!(!sends_opus(&format!(
            "{head}{}{VIDEO}",
            audio.replace("m=audio 9", "m=audio 0")
        )));
        assert!(!sends_opus(&format!(
            "{head}{}{VIDEO}",
            audio.replace("opus/48000/2", "PCMU/8000")
        )));
    }
}
