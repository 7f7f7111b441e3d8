//! Live input for a broadcaster, without I/O: what OBS, ffmpeg or a hardware encoder send
//! over RTMP, turned into the fragmented MP4 the broadcaster cuts into chunks.
//!
//! - [`RtmpSession`]: one publisher's connection (handshake, chunk stream, AMF0 commands):
//!   bytes in, bytes out, and events (a publish request with its stream key, media).
//! - [`Remuxer`]: FLV audio/video payloads (H.264 + AAC) in, fragmented MP4 out, a
//!   fragment per keyframe.
//! - [`FlvReader`]: FLV files (the same payloads, framed as tags).
//! - [`RtpIngest`]: WebRTC input (WHIP): RTP packets of H.264 and Opus in, fragmented MP4
//!   out, and when to ask the sender for a keyframe.
//!
//! Every read of network or file input is bounds-checked: bad input is an
//! [`IngestError`], never a panic.

mod aac;
mod amf0;
mod avc;
mod chunk_stream;
mod cursor;
mod error;
mod flv;
mod handshake;
mod mp4_writer;
mod opus;
mod remux;
mod reorder;
mod rtp_h264;
mod rtp_ingest;
mod session;

pub use error::IngestError;
pub use flv::{FlvReader, MediaKind};
pub use remux::Remuxer;
pub use rtp_ingest::{RtpIngest, RtpPacket, KEYFRAME_INTERVAL_MS};
pub use session::{PublishRefusal, RtmpSession, SessionEvent, StreamKey};
