//! Everything the browser tells the app, as one enum on one channel.

use futures::channel::mpsc;
use protocol::PeerId;
use web_sys::RtcDataChannel;

#[derive(Debug)]
pub enum Event {
    SocketOpen,
    /// A text frame from the signal server.
    SocketText(String),
    SocketClosed,
    /// Time to try the signal server again.
    Reconnect,
    /// An answerer's data channel arrived.
    DataChannel(PeerId, RtcDataChannel),
    ChannelOpen(PeerId),
    ChannelMessage(PeerId, Vec<u8>),
    ChannelClosed(PeerId),
    /// The channel's send queue fell below its low-water mark: more can go out.
    ChannelDrained(PeerId),
    /// Local ICE gathering finished: the full description can be sent.
    GatheringComplete(PeerId),
    LinkFailed(PeerId),
    SourceOpen,
    UpdateEnd,
    /// The first chunk's planned start time came.
    StartDue,
    /// The video element shows frames (again).
    VideoPlaying,
    /// The video element ran out of media.
    VideoWaiting,
    Tick,
    /// `destroy()`: end the app, closing every link.
    Stop,
}

pub type Events = mpsc::UnboundedSender<Event>;

/// Forwards an event; a closed channel means the app is gone, so there is nobody to tell.
pub fn emit(events: &Events, event: Event) {
    let _ = events.unbounded_send(event);
}
