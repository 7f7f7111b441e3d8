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
    /// The data channel took what was queued down to `swarm::LINK_DRAINED_BELOW` bytes
    /// or fewer: the driver reports the queue to the node, which may send more.
    Drained(LinkId),
    /// Our description with the candidates gathered, for the peer.
    LocalDescription(LinkId, String),
    /// Reported when the connection or its channel ends (possibly twice: the core
    /// ignores a close for a link it no longer has).
    Closed(LinkId),
}

/// Sends to one peer. Counts the bytes handed over and not yet taken by the data
/// channels, so the swarm gets back-pressure (as a browser's `bufferedAmount`).
#[derive(Debug, Clone)]
pub struct Outbox {
    control: mpsc::UnboundedSender<Vec<u8>>,
    lanes: Arc<Lanes>,
}

/// What a link's two channels share: the bytes queued on both, and the pieces channel's
/// writer once it opened.
#[derive(Debug, Default)]
struct Lanes {
    queued: AtomicU64,
    pieces: OnceLock<mpsc::UnboundedSender<Vec<u8>>>,
}

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

    /// Bytes handed over and not yet written to a data channel.
    pub fn queued(&self) -> u64 {
        self.lanes.queued.load(Ordering::Relaxed)
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
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                let writer = write_channel(peer, channel.clone(), lanes.clone(), events.clone());
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
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = events.send(LinkEvent::Closed(peer));
}

/// A queue into `channel`, written by a task of its own.
fn write_channel(
    peer: LinkId,
    channel: Arc<dyn DataChannel>,
    lanes: Arc<Lanes>,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let len = bytes.len() as u64;
            let sent = channel.send(BytesMut::from(&bytes[..])).await;
            let before = lanes.queued.fetch_sub(len, Ordering::Relaxed);
            if sent.is_err() {
                // Nothing queued behind it will be written either.
                rx.close();
                while let Some(rest) = rx.recv().await {
                    lanes.queued.fetch_sub(rest.len() as u64, Ordering::Relaxed);
                }
                break;
            }
            // As a browser's `bufferedamountlow`: once per fall to the mark.
            let low = swarm::LINK_DRAINED_BELOW;
            if before > low && before - len <= low {
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
