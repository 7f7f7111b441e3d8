//! One WebRTC link to another peer, run as its own task: it owns the peer connection,
//! applies remote set-up in order, and reports events to the node. Data flows on one data
//! channel labelled `swarm`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{IceServer, PeerId, SignalPayload};
use rtc::ice::mdns::MulticastDnsMode;
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};

use crate::NativeError;

/// Longest wait for local ICE candidates before sending what was gathered.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a link tells the node.
#[derive(Debug)]
pub enum LinkEvent {
    /// The data channel opened; send bytes to the peer through the outbox.
    Open(PeerId, Outbox),
    Message(PeerId, Vec<u8>),
    /// Set-up for the remote peer, to relay through the signal server.
    LocalSignal(PeerId, SignalPayload),
    Closed(PeerId),
}

/// Sends to one peer. Counts the bytes handed over and not yet taken by the data channel,
/// so the swarm gets back-pressure (as a browser's `bufferedAmount`).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicU64>,
}

impl Outbox {
    pub fn send(&self, bytes: Vec<u8>) {
        self.queued.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let _ = self.tx.send(bytes);
    }

    /// Bytes handed over and not yet written to the data channel.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }
}

/// What the node tells a link. Dropping the sender closes the link.
#[derive(Debug)]
pub enum LinkCommand {
    Remote(SignalPayload),
}

/// How a link starts.
pub enum Start {
    /// We were introduced to the peer: we offer.
    Offer,
    /// The peer offered.
    Answer { sdp: String },
}

/// Runs a link until the node drops its command sender or the connection fails.
pub async fn run(
    peer: PeerId,
    start: Start,
    ice_servers: Vec<IceServer>,
    mut commands: mpsc::UnboundedReceiver<LinkCommand>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    if let Err(e) = drive(peer, start, ice_servers, &mut commands, &events).await {
        tracing::warn!(%peer, error = %e, "link failed");
    }
    let _ = events.send(LinkEvent::Closed(peer));
}

async fn drive(
    peer: PeerId,
    start: Start,
    ice_servers: Vec<IceServer>,
    commands: &mut mpsc::UnboundedReceiver<LinkCommand>,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> Result<(), NativeError> {
    let gathered = Arc::new(Notify::new());
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        peer,
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
                .with_ice_servers(ice_servers.into_iter().map(rtc_ice_server).collect())
                .build(),
        )
        .with_setting_engine(settings)
        .with_handler(handler)
        .with_udp_addrs(vec!["0.0.0.0:0".to_owned()])
        .build()
        .await
        .map_err(webrtc_error)?;
    let local = match start {
        Start::Offer => {
            let channel = pc
                .create_data_channel("swarm", None)
                .await
                .map_err(webrtc_error)?;
            tokio::spawn(run_channel(peer, channel, events.clone()));
            let offer = pc.create_offer(None).await.map_err(webrtc_error)?;
            pc.set_local_description(offer)
                .await
                .map_err(webrtc_error)?;
            SignalPayload::Offer {
                sdp: gathered_sdp(&pc, &gathered).await?,
            }
        }
        Start::Answer { sdp } => {
            let offer = RTCSessionDescription::offer(sdp).map_err(webrtc_error)?;
            pc.set_remote_description(offer)
                .await
                .map_err(webrtc_error)?;
            let answer = pc.create_answer(None).await.map_err(webrtc_error)?;
            pc.set_local_description(answer)
                .await
                .map_err(webrtc_error)?;
            SignalPayload::Answer {
                sdp: gathered_sdp(&pc, &gathered).await?,
            }
        }
    };
    // Candidates go inside the SDP (gathering finished first), so the remote side never
    // sees a candidate before the description it belongs to.
    let _ = events.send(LinkEvent::LocalSignal(peer, local));
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
                Some(LinkCommand::Remote(SignalPayload::Offer { .. })) => {
                    tracing::warn!(%peer, "ignoring a renegotiation offer on an established link");
                }
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

/// The local description once ICE gathering finished (or timed out), candidates included.
async fn gathered_sdp(pc: &impl PeerConnection, gathered: &Notify) -> Result<String, NativeError> {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.notified()).await;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| NativeError::WebRtc("no local description after setting it".into()))
}

fn webrtc_error(e: webrtc::error::Error) -> NativeError {
    NativeError::WebRtc(e.to_string())
}

/// Reads one data channel and writes to it from a queue, so sends never block the node.
async fn run_channel(
    peer: PeerId,
    channel: Arc<dyn DataChannel>,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
                let queued = Arc::new(AtomicU64::new(0));
                let written = queued.clone();
                let writer = channel.clone();
                tokio::spawn(async move {
                    while let Some(bytes) = out_rx.recv().await {
                        let len = bytes.len() as u64;
                        let sent = writer.send(BytesMut::from(&bytes[..])).await;
                        written.fetch_sub(len, Ordering::Relaxed);
                        if sent.is_err() {
                            break;
                        }
                    }
                });
                let outbox = Outbox { tx: out_tx, queued };
                let _ = events.send(LinkEvent::Open(peer, outbox));
            }
            DataChannelEvent::OnMessage(message) => {
                let _ = events.send(LinkEvent::Message(peer, message.data.to_vec()));
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    let _ = events.send(LinkEvent::Closed(peer));
}

struct Handler {
    peer: PeerId,
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
        tokio::spawn(run_channel(self.peer, channel, self.events.clone()));
    }
}
