//! One WebRTC link to another peer: an `RTCPeerConnection`, its ordered `swarm` data
//! channel and, when the offerer opened one, an unordered `pieces` channel that pieces
//! take (`protocol::PiecesChannel`).

use std::cell::RefCell;
use std::rc::Rc;

use gloo_events::EventListener;
use protocol::{IceServer, PiecesChannel};
use swarm::LinkId;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelInit,
    RtcDataChannelState, RtcDataChannelType, RtcIceCandidateInit, RtcIceGatheringState,
    RtcIceTransportPolicy, RtcPeerConnection, RtcPeerConnectionState, RtcSdpType,
    RtcSessionDescriptionInit,
};

use crate::event::{emit, Event, Events};
use crate::WebError;

/// At this many queued bytes or fewer a data channel reports it drained (every piece
/// sent is followed by a report: `swarm::LINK_DRAINED_BELOW`).
const DRAINED_BELOW: u32 = swarm::LINK_DRAINED_BELOW as u32;

pub struct Link {
    pc: RtcPeerConnection,
    /// Shared with the `datachannel` listener: an answerer's channel gets its listeners
    /// the moment it arrives, or its `open` and first messages (the peer's `Hello`) could
    /// fire while the app is busy elsewhere, with nobody listening.
    channel: Rc<RefCell<Option<Channel>>>,
    /// The pieces channel, if the link has one; the same way.
    pieces: Rc<RefCell<Option<Channel>>>,
    /// Whether our description went to the peer; it goes once, after ICE gathering.
    pub local_sent: bool,
    pc_listeners: Vec<EventListener>,
}

/// A data channel and the listeners that forward its events.
struct Channel {
    channel: RtcDataChannel,
    _listeners: Vec<EventListener>,
}

impl Link {
    /// `relay_only`: TURN relay candidates only (privacy mode).
    pub fn new(
        peer: LinkId,
        ice_servers: &[IceServer],
        relay_only: bool,
        events: &Events,
    ) -> Result<Link, WebError> {
        let config = RtcConfiguration::new();
        config.set_ice_servers(&ice_servers_js(ice_servers)?.into());
        if relay_only {
            config.set_ice_transport_policy(RtcIceTransportPolicy::Relay);
        }
        let pc = RtcPeerConnection::new_with_configuration(&config)?;
        let channel = Rc::new(RefCell::new(None));
        let pieces = Rc::new(RefCell::new(None));
        let on_channel = {
            let events = events.clone();
            let control_slot = Rc::clone(&channel);
            let pieces_slot = Rc::clone(&pieces);
            EventListener::new(&pc, "datachannel", move |event| {
                if let Some(event) = event.dyn_ref::<RtcDataChannelEvent>() {
                    let channel = event.channel();
                    let (slot, lane) = if channel.label() == protocol::PIECES_CHANNEL {
                        (&pieces_slot, Lane::Pieces)
                    } else {
                        (&control_slot, Lane::Control)
                    };
                    *slot.borrow_mut() = Some(listen(peer, channel, lane, &events));
                }
            })
        };
        let on_gathering = {
            let events = events.clone();
            let pc_ref = pc.clone();
            EventListener::new(&pc, "icegatheringstatechange", move |_| {
                if pc_ref.ice_gathering_state() == RtcIceGatheringState::Complete {
                    emit(&events, Event::GatheringComplete(peer));
                }
            })
        };
        let on_state = {
            let events = events.clone();
            let pc_ref = pc.clone();
            EventListener::new(&pc, "connectionstatechange", move |_| {
                if matches!(
                    pc_ref.connection_state(),
                    RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
                ) {
                    emit(&events, Event::LinkFailed(peer));
                }
            })
        };
        Ok(Link {
            pc,
            channel,
            pieces,
            local_sent: false,
            pc_listeners: vec![on_channel, on_gathering, on_state],
        })
    }

    /// Offerer: creates the data channels and the offer.
    pub async fn offer(
        &mut self,
        peer: LinkId,
        pieces: PiecesChannel,
        events: &Events,
    ) -> Result<(), WebError> {
        let channel = self.pc.create_data_channel(protocol::CONTROL_CHANNEL);
        *self.channel.borrow_mut() = Some(listen(peer, channel, Lane::Control, events));
        let lifetime = match pieces {
            PiecesChannel::Shared => None,
            PiecesChannel::Unordered => Some(None),
            PiecesChannel::Lifetime(ms) => Some(Some(ms)),
        };
        if let Some(lifetime) = lifetime {
            let init = RtcDataChannelInit::new();
            init.set_ordered(false);
            if let Some(ms) = lifetime {
                init.set_max_packet_life_time(ms);
            }
            let channel = self
                .pc
                .create_data_channel_with_data_channel_dict(protocol::PIECES_CHANNEL, &init);
            *self.pieces.borrow_mut() = Some(listen(peer, channel, Lane::Pieces, events));
        }
        let offer = JsFuture::from(self.pc.create_offer()).await?;
        self.set_local(RtcSdpType::Offer, &sdp_of(&offer)?, peer, events)
            .await
    }

    /// Answerer: applies the peer's offer and creates the answer.
    pub async fn answer(
        &mut self,
        peer: LinkId,
        sdp: &str,
        events: &Events,
    ) -> Result<(), WebError> {
        let remote = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        remote.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&remote)).await?;
        let answer = JsFuture::from(self.pc.create_answer()).await?;
        self.set_local(RtcSdpType::Answer, &sdp_of(&answer)?, peer, events)
            .await
    }

    pub async fn accept_answer(&self, sdp: &str) -> Result<(), WebError> {
        let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
        remote.set_sdp(sdp);
        JsFuture::from(self.pc.set_remote_description(&remote)).await?;
        Ok(())
    }

    pub async fn add_candidate(
        &self,
        candidate: &str,
        sdp_mid: Option<&str>,
        index: Option<u16>,
    ) -> Result<(), WebError> {
        let init = RtcIceCandidateInit::new(candidate);
        init.set_sdp_mid(sdp_mid);
        init.set_sdp_m_line_index(index);
        JsFuture::from(
            self.pc
                .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)),
        )
        .await?;
        Ok(())
    }

    /// The local description with every gathered candidate in it.
    pub fn local_sdp(&self) -> Option<String> {
        self.pc.local_description().map(|d| d.sdp())
    }

    /// Bytes queued on the data channels and not yet sent.
    pub fn buffered(&self) -> u64 {
        [&self.channel, &self.pieces]
            .iter()
            .filter_map(|slot| {
                let slot = slot.borrow();
                slot.as_ref()
                    .map(|c| u64::from(c.channel.buffered_amount()))
            })
            .sum()
    }

    /// Whether the link has a pieces channel, open.
    pub fn pieces_channel_open(&self) -> bool {
        self.pieces
            .borrow()
            .as_ref()
            .is_some_and(|c| c.channel.ready_state() == RtcDataChannelState::Open)
    }

    /// Sends one peer message, a piece on the pieces channel if it is open; false when
    /// the channel cannot take it.
    pub fn send(&self, bytes: &[u8], is_piece: bool) -> bool {
        let pieces = self.pieces.borrow();
        let open_pieces = pieces
            .as_ref()
            .filter(|c| is_piece && c.channel.ready_state() == RtcDataChannelState::Open);
        let control = self.channel.borrow();
        open_pieces
            .or(control.as_ref())
            .is_some_and(|c| c.channel.send_with_u8_array(bytes).is_ok())
    }

    async fn set_local(
        &self,
        kind: RtcSdpType,
        sdp: &str,
        peer: LinkId,
        events: &Events,
    ) -> Result<(), WebError> {
        let local = RtcSessionDescriptionInit::new(kind);
        local.set_sdp(sdp);
        JsFuture::from(self.pc.set_local_description(&local)).await?;
        // Gathering may finish before a listener could see the change.
        if self.pc.ice_gathering_state() == RtcIceGatheringState::Complete {
            emit(events, Event::GatheringComplete(peer));
        }
        Ok(())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.pc_listeners.clear();
        for slot in [&self.channel, &self.pieces] {
            if let Some(channel) = slot.borrow_mut().take() {
                drop(channel._listeners);
                channel.channel.close();
            }
        }
        self.pc.close();
    }
}

fn sdp_of(description: &JsValue) -> Result<String, WebError> {
    js_sys::Reflect::get(description, &"sdp".into())?
        .as_string()
        .ok_or_else(|| WebError::Js("session description without sdp".into()))
}

/// `[{urls, username?, credential?}, ...]` for `RTCConfiguration.iceServers`.
fn ice_servers_js(servers: &[IceServer]) -> Result<js_sys::Array, WebError> {
    let list = js_sys::Array::new();
    for server in servers {
        let entry = js_sys::Object::new();
        let urls: js_sys::Array = server.urls.iter().map(|u| JsValue::from_str(u)).collect();
        js_sys::Reflect::set(&entry, &"urls".into(), &urls)?;
        if let Some(username) = &server.username {
            js_sys::Reflect::set(&entry, &"username".into(), &username.into())?;
        }
        if let Some(credential) = &server.credential {
            js_sys::Reflect::set(&entry, &"credential".into(), &credential.into())?;
        }
        list.push(&entry);
    }
    Ok(list)
}

/// Which of a link's channels: the control channel's opening opens the link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Control,
    Pieces,
}

/// Forwards a data channel's events, tagged with its link.
fn listen(peer: LinkId, channel: RtcDataChannel, lane: Lane, events: &Events) -> Channel {
    channel.set_binary_type(RtcDataChannelType::Arraybuffer);
    let on_open = {
        let events = events.clone();
        EventListener::new(&channel, "open", move |_| {
            if lane == Lane::Control {
                emit(&events, Event::ChannelOpen(peer))
            }
        })
    };
    let on_message = {
        let events = events.clone();
        EventListener::new(&channel, "message", move |event| {
            let data = event.dyn_ref::<MessageEvent>().map(|m| m.data());
            if let Some(buffer) = data.and_then(|d| d.dyn_into::<js_sys::ArrayBuffer>().ok()) {
                emit(
                    &events,
                    Event::ChannelMessage(peer, js_sys::Uint8Array::new(&buffer).to_vec()),
                );
            }
        })
    };
    let on_close = {
        let events = events.clone();
        EventListener::new(&channel, "close", move |_| {
            emit(&events, Event::ChannelClosed(peer))
        })
    };
    // Back-pressure: the swarm stops sending pieces to a link with a full queue and
    // resumes when the browser says it drained.
    channel.set_buffered_amount_low_threshold(DRAINED_BELOW);
    let on_drained = {
        let events = events.clone();
        EventListener::new(&channel, "bufferedamountlow", move |_| {
            emit(&events, Event::ChannelDrained(peer))
        })
    };
    let opened = channel.ready_state() == RtcDataChannelState::Open;
    if opened && lane == Lane::Control {
        // Opened before the listener existed: say so now.
        emit(events, Event::ChannelOpen(peer));
    }
    Channel {
        channel,
        _listeners: vec![on_open, on_message, on_close, on_drained],
    }
}
