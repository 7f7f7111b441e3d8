//! Everything the browser tells the app, as one enum on one channel.

use futures::channel::mpsc;
use swarm::{FetchHandle, FetchOutcome, LinkId, SignalId};

use crate::controls::Command;

#[derive(Debug)]
pub enum Event {
    SocketOpen(SignalId),
    /// A text frame from the signal server.
    SocketText(SignalId, String),
    /// The socket closed, or never opened.
    SocketClosed(SignalId),
    ChannelOpen(LinkId),
    ChannelMessage(LinkId, Vec<u8>),
    ChannelClosed(LinkId),
    /// The channel's send queue fell below its low-water mark: more can go out.
    ChannelDrained(LinkId),
    /// Local ICE gathering finished: the full description can be sent.
    GatheringComplete(LinkId),
    LinkFailed(LinkId),
    /// The peer core's next timer is due.
    NodeTimer,
    SourceOpen,
    /// A `ManagedMediaSource` wants media (`startstreaming`) or not (`endstreaming`).
    Streaming(bool),
    UpdateEnd,
    /// The first chunk's planned start time came.
    StartDue,
    /// The video element shows frames (again).
    VideoPlaying,
    /// The video element ran out of media.
    VideoWaiting,
    VideoPaused,
    VideoPlay,
    /// Volume or mute changed.
    VideoChanged,
    /// `play()` was refused (the `DOMException`'s name: `NotAllowedError` for autoplay
    /// with sound before any click).
    PlayRefused(String),
    /// From the controls, the keyboard, the JS API or the embedding page.
    Command(Command),
    /// The player's and the stats panel's own cadence.
    Tick,
    /// `destroy()`: end the app, closing every link.
    Stop,
    /// A fetch from an HTTP edge ended.
    Fetched(FetchHandle, FetchOutcome),
}

pub type Events = mpsc::UnboundedSender<Event>;

/// Forwards an event; a closed channel means the app is gone, so there is nobody to tell.
pub fn emit(events: &Events, event: Event) {
    let _ = events.unbounded_send(event);
}
