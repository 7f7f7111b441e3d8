//! One WebRTC link to another peer, run as its own task: it owns the peer connection,
//! applies remote set-up in order, and reports events under its `LinkId` to the driver.
//! Messages flow on the ordered data channel `swarm`; pieces on a second, unordered one,
//! `pieces`, when the offerer opened one ([`PiecesChannel`]). When to give up gathering
//! or connecting is the peer core's decision, not this task's.

use bytes::{Bytes, BytesMut};
use protocol::{IceServer, PiecesChannel, SignalPayload};
use rtc::ice::mdns::MulticastDnsMode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use swarm::{LinkId, LinkStart};
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use crate::NativeError;

/// What a link tells the driver.
#[derive(Debug)]
pub enum LinkEvent {
    /// The data channel opened; send bytes to the peer through the outbox.
    Open(LinkId, Outbox),
    Message(LinkId, Bytes),
    /// What the link holds fell to `swarm::LINK_DRAINED_BELOW` bytes or fewer (SCTP's
    /// `bufferedamountlow`, or our queue emptying): the driver reports the queue to the
    /// node, which may send more.
    Drained(LinkId),
    /// Our description with the candidates gathered, for the peer.
    LocalDescription(LinkId, String),
    /// Reported when the connection or its channel ends (possibly twice: the core
    /// ignores a close for a link it no longer has).
    Closed(LinkId),
}

/// Sends to one peer. Counts the bytes handed over and not yet released by SCTP (queued
/// here, waiting in the association, or sent and not yet acknowledged), so the swarm gets
/// back-pressure from the link itself. The `webrtc` crate's `send` never blocks: counting
/// only our own queue, a link whose congestion window collapsed after a loss looked
/// empty, and the swarm kept filling it. (A browser's `bufferedAmount` falls as data is
/// sent, this count as it is acknowledged, a round trip later; the simulator's as it
/// leaves the uplink.)
#[derive(Debug, Clone)]
pub struct Outbox {
    control: mpsc::UnboundedSender<Vec<u8>>,
    lanes: Arc<Lanes>,
}

/// What a link's two channels share: the bytes queued on both, each channel's bytes in
/// SCTP as last read, and the pieces channel's writer once it opened.
#[derive(Debug, Default)]
struct Lanes {
    queued: AtomicU64,
    /// Outstanding bytes in SCTP: the control channel's, then the pieces channel's.
    in_sctp: [AtomicU64; 2],
    pieces: OnceLock<mpsc::UnboundedSender<Vec<u8>>>,
}

impl Lanes {
    fn total(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
            + self.in_sctp[0].load(Ordering::Relaxed)
            + self.in_sctp[1].load(Ordering::Relaxed)
    }

    /// Reads what SCTP still holds of `channel`'s bytes (0 once the channel is gone).
    async fn refresh(&self, lane: usize, channel: &dyn DataChannel) {
        let bytes = channel.outstanding_bytes().await.unwrap_or(0) as u64;
        self.in_sctp[lane].store(bytes, Ordering::Relaxed);
    }
}

/// How often a writer re-reads its channel's outstanding bytes while some are left, so
/// the swarm sees a link empty out between `bufferedamountlow` events (a browser's
/// `bufferedAmount` is always current).
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Outbox {
    /// Sends one message: a piece on the pieces channel if the link has one open, all
    /// else (and pieces without one) on the ordered control channel.
    pub fn send(&self, bytes: Vec<u8>, is_piece: bool) {
        let len = bytes.len() as u64;
        self.lanes.queued.fetch_add(len, Ordering::Relaxed);
        let lane = match self.lanes.pieces.get() {
            Some(pieces) if is_piece => pieces,
            _ => &self.control,
        };
        if lane.send(bytes).is_err() {
            // Its writer ended (the channel failed): nothing will take these bytes.
            self.lanes.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Bytes handed over and not yet released by SCTP.
    pub fn queued(&self) -> u64 {
        self.lanes.total()
    }
}

/// What the driver tells a link. Dropping the sender closes the link.
#[derive(Debug)]
pub enum LinkCommand {
    Remote(SignalPayload),
    /// Send the description now, with the candidates gathered so far.
    Flush,
}

/// Runs a link until the driver drops its command sender or the connection fails.
/// The candidate types in an SDP, in order, e.g. `host,srflx,relay`.
pub fn candidate_types(sdp: &str) -> String {
    let types: Vec<&str> = sdp
        .lines()
        .filter(|line| line.starts_with("a=candidate:"))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "typ")?;
            words.next()
        })
        .collect();
    types.join(",")
}

/// How a link finds its way to the peer, and how it carries pieces.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub ice_servers: Vec<IceServer>,
    /// TURN relay candidates only (privacy mode).
    pub relay_only: bool,
    pub pieces: PiecesChannel,
}

pub async fn run(
    peer: LinkId,
    start: LinkStart,
    config: LinkConfig,
    mut commands: mpsc::UnboundedReceiver<LinkCommand>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    if let Err(e) = drive(peer, start, config, &mut commands, &events).await {
        tracing::warn!(%peer, error = %e, "link failed");
    }
    let _ = events.send(LinkEvent::Closed(peer));
}

async fn drive(
    peer: LinkId,
    start: LinkStart,
    config: LinkConfig,
    commands: &mut mpsc::UnboundedReceiver<LinkCommand>,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> Result<(), NativeError> {
    let gathered = Arc::new(Notify::new());
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    let lanes = Arc::new(Lanes::default());
    let handler = Arc::new(Handler {
        peer,
        lanes: lanes.clone(),
        events: events.clone(),
        gathered: gathered.clone(),
        failed: failed_tx,
    });
    // mDNS would hide host addresses behind .local names and needs a multicast-capable
    // interface; peers here exchange plain addresses.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(config.ice_servers.into_iter().map(rtc_ice_server).collect())
                .with_ice_transport_policy(if config.relay_only {
                    RTCIceTransportPolicy::Relay
                } else {
                    RTCIceTransportPolicy::All
                })
                .build(),
        )
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec!["0.0.0.0:0".to_owned()])
        .build()
        .await
        .map_err(webrtc_error)?;
    let local = match start {
        LinkStart::Offer => {
            let channel = pc
                .create_data_channel(protocol::CONTROL_CHANNEL, None)
                .await
                .map_err(webrtc_error)?;
            tokio::spawn(run_channel(peer, channel, lanes.clone(), events.clone()));
            if let Some(init) = pieces_channel_init(config.pieces) {
                let pieces = pc
                    .create_data_channel(protocol::PIECES_CHANNEL, Some(init))
                    .await
                    .map_err(webrtc_error)?;
                tokio::spawn(run_channel(peer, pieces, lanes.clone(), events.clone()));
            }
            let offer = pc.create_offer(None).await.map_err(webrtc_error)?;
            pc.set_local_description(offer)
                .await
                .map_err(webrtc_error)?;
            gathered_sdp(&pc, &gathered, commands).await?
        }
        LinkStart::Answer { sdp } => {
            let offer = RTCSessionDescription::offer(sdp).map_err(webrtc_error)?;
            pc.set_remote_description(offer)
                .await
                .map_err(webrtc_error)?;
            let answer = pc.create_answer(None).await.map_err(webrtc_error)?;
            pc.set_local_description(answer)
                .await
                .map_err(webrtc_error)?;
            gathered_sdp(&pc, &gathered, commands).await?
        }
    };
    let Some(local) = local else {
        return Ok(()); // The driver dropped the link while it gathered.
    };
    // Candidates go inside the SDP (gathering finished first), so the remote side never
    // sees a candidate before the description it belongs to.
    // Which kinds of address we offer the peer: privacy mode must offer relays only.
    tracing::info!(%peer, candidates = %candidate_types(&local), "local description ready");
    let _ = events.send(LinkEvent::LocalDescription(peer, local));
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(LinkCommand::Remote(SignalPayload::Answer { sdp })) => {
                    let answer = RTCSessionDescription::answer(sdp).map_err(webrtc_error)?;
                    pc.set_remote_description(answer).await.map_err(webrtc_error)?;
                }
                Some(LinkCommand::Remote(SignalPayload::Candidate { candidate, sdp_mid, sdp_m_line_index })) => {
                    let init = RTCIceCandidateInit { candidate, sdp_mid, sdp_mline_index: sdp_m_line_index, ..Default::default() };
                    if let Err(e) = pc.add_ice_candidate(init).await {
                        tracing::debug!(%peer, error = %e, "ignoring a remote candidate");
                    }
                }
                Some(LinkCommand::Remote(SignalPayload::Offer { .. } | SignalPayload::Decline {})) => {
                    tracing::warn!(%peer, "ignoring a renegotiation offer on an established link");
                }
                Some(LinkCommand::Flush) => {}
                None => break,
            },
            _ = failed_rx.recv() => break,
        }
    }
    let _ = pc.close().await;
    Ok(())
}

fn rtc_ice_server(server: IceServer) -> RTCIceServer {
    RTCIceServer {
        urls: server.urls,
        username: server.username.unwrap_or_default(),
        credential: server.credential.unwrap_or_default(),
    }
}

/// The local description once ICE gathering finished (or the driver said not to wait
/// longer), candidates included; `None` when the driver dropped the link meanwhile.
async fn gathered_sdp(
    pc: &impl PeerConnection,
    gathered: &Notify,
    commands: &mut mpsc::UnboundedReceiver<LinkCommand>,
) -> Result<Option<String>, NativeError> {
    loop {
        tokio::select! {
            _ = gathered.notified() => break,
            command = commands.recv() => match command {
                Some(LinkCommand::Flush) => break,
                // Nothing remote can come before our description went out.
                Some(LinkCommand::Remote(_)) => {}
                None => return Ok(None),
            },
        }
    }
    pc.local_description()
        .await
        .map(|d| Some(d.sdp))
        .ok_or_else(|| NativeError::WebRtc("no local description after setting it".into()))
}

fn webrtc_error(e: webrtc::error::Error) -> NativeError {
    NativeError::WebRtc(e.to_string())
}

/// The pieces channel's settings, or `None` when pieces share the control channel.
fn pieces_channel_init(pieces: PiecesChannel) -> Option<RTCDataChannelInit> {
    let lifetime = match pieces {
        PiecesChannel::Shared => return None,
        PiecesChannel::Unordered => None,
        PiecesChannel::Lifetime(ms) => Some(ms),
    };
    Some(RTCDataChannelInit {
        ordered: false,
        max_packet_life_time: lifetime,
        ..Default::default()
    })
}

/// Reads one of the link's data channels and writes to it from a queue, so sends never
/// block the node. The control channel's opening opens the link; the pieces channel's
/// only lets pieces use it. Either one closing closes the link.
async fn run_channel(
    peer: LinkId,
    channel: Arc<dyn DataChannel>,
    lanes: Arc<Lanes>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    let is_pieces = channel
        .label()
        .await
        .is_ok_and(|l| l == protocol::PIECES_CHANNEL);
    let lane = usize::from(is_pieces);
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                let low = u32::try_from(swarm::LINK_DRAINED_BELOW)
                    .expect("the drain mark is a few KiB, well within u32");
                if let Err(e) = channel.set_buffered_amount_low_threshold(low).await {
                    tracing::debug!(%peer, error = %e, "no drain events from a channel");
                }
                let writer = write_channel(peer, lane, channel.clone(), &lanes, events.clone());
                if is_pieces {
                    let _ = lanes.pieces.set(writer);
                } else {
                    let outbox = Outbox {
                        control: writer,
                        lanes: lanes.clone(),
                    };
                    let _ = events.send(LinkEvent::Open(peer, outbox));
                }
            }
            DataChannelEvent::OnMessage(message) => {
                let _ = events.send(LinkEvent::Message(peer, message.data.freeze()));
            }
            DataChannelEvent::OnBufferedAmountLow => {
                lanes.refresh(lane, channel.as_ref()).await;
                let _ = events.send(LinkEvent::Drained(peer));
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = events.send(LinkEvent::Closed(peer));
}

/// A queue into `channel`, written by a task of its own, which also keeps the lane's
/// count of bytes in SCTP current.
fn write_channel(
    peer: LinkId,
    lane: usize,
    channel: Arc<dyn DataChannel>,
    lanes: &Arc<Lanes>,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    // Weak: the lanes hold the pieces channel's sender, so a strong reference held here
    // kept this task's own queue open, and the task alive, after its link was gone.
    let lanes = Arc::downgrade(lanes);
    tokio::spawn(async move {
        let low = swarm::LINK_DRAINED_BELOW;
        loop {
            let Some(held) = lanes.upgrade() else { break };
            let before = held.total();
            let in_sctp = held.in_sctp[lane].load(Ordering::Relaxed);
            drop(held);
            let next = if in_sctp > 0 {
                match tokio::time::timeout(REFRESH_EVERY, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let Some(held) = lanes.upgrade() else { break };
                        held.refresh(lane, channel.as_ref()).await;
                        if before > low && held.total() <= low {
                            let _ = events.send(LinkEvent::Drained(peer));
                        }
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(bytes) = next else { break };
            let Some(held) = lanes.upgrade() else { break };
            let len = bytes.len() as u64;
            if channel.send(BytesMut::from(&bytes[..])).await.is_err() {
                // Nothing queued behind it will be written either.
                held.queued.fetch_sub(len, Ordering::Relaxed);
                rx.close();
                while let Some(rest) = rx.recv().await {
                    held.queued.fetch_sub(rest.len() as u64, Ordering::Relaxed);
                }
                held.in_sctp[lane].store(0, Ordering::Relaxed);
                break;
            }
            // SCTP's count first, so the message is counted somewhere throughout.
            held.refresh(lane, channel.as_ref()).await;
            held.queued.fetch_sub(len, Ordering::Relaxed);
            // As a browser's `bufferedamountlow`: once per fall to the mark.
            if before > low && held.total() <= low {
                let _ = events.send(LinkEvent::Drained(peer));
            }
        }
    });
    tx
}

struct Handler {
    peer: LinkId,
    lanes: Arc<Lanes>,
    events: mpsc::UnboundedSender<LinkEvent>,
    gathered: Arc<Notify>,
    failed: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(peer = %self.peer, %state, "connection state");
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            let _ = self.failed.send(());
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        tokio::spawn(run_channel(
            self.peer,
            channel,
            self.lanes.clone(),
            self.events.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_types_are_read_from_the_sdp_in_order() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host\r\n\
                   a=candidate:2 1 udp 16777215 10.0.0.9 6000 typ relay raddr 0.0.0.0 rport 0\r\n\
                   a=ice-ufrag:x\r\n";
        assert_eq!(candidate_types(sdp), "host,relay");
        assert_eq!(candidate_types("v=0\r\n"), "");
    }
}
