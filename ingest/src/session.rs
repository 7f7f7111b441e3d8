//! One RTMP publisher's connection, without I/O: bytes in through
//! [`RtmpSession::handle_input`], replies out through [`RtmpSession::take_output`], and
//! what the driver must act on through [`RtmpSession::poll_event`]. The driver decides
//! whether a stream key may publish ([`RtmpSession::accept_publish`] or
//! [`RtmpSession::refuse_publish`]).

use std::collections::VecDeque;

use crate::amf0::{self, object, string, Amf};
use crate::chunk_stream::{
    write_message, ChunkReader, DEFAULT_CHUNK_SIZE, MAX_MESSAGE_BYTES, MAX_SETUP_MESSAGE_BYTES,
};
use crate::flv::MediaKind;
use crate::handshake::Handshake;
use crate::IngestError;

/// The chunk size we send with: fewer headers than RTMP's default 128.
const OUT_CHUNK_SIZE: usize = 4096;
/// The acknowledgement window and peer bandwidth we announce.
const WINDOW: u32 = 5_000_000;
/// The message stream `createStream` hands out (one publish per connection).
const STREAM_ID: u32 = 1;
/// Longest stream key accepted.
const MAX_KEY_BYTES: usize = 256;

// Message types.
const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const SET_PEER_BANDWIDTH: u8 = 6;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const DATA_AMF3: u8 = 15;
const COMMAND_AMF3: u8 = 17;
const DATA_AMF0: u8 = 18;
const COMMAND_AMF0: u8 = 20;

/// A publisher's stream key: the secret in `rtmp://HOST/live/KEY`. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey(String);

impl StreamKey {
    /// A key as configured by the operator (not empty, at most 256 bytes).
    pub fn new(key: &str) -> Result<StreamKey, IngestError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(IngestError::Rtmp(format!(
                "a stream key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            )));
        }
        Ok(StreamKey(key.to_owned()))
    }

    /// Whether two keys are equal, in time that does not depend on where they differ.
    pub fn matches(&self, other: &StreamKey) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamKey(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug)]
pub enum SessionEvent {
    /// The publisher asks to publish with this key: answer with
    /// [`RtmpSession::accept_publish`] or [`RtmpSession::refuse_publish`].
    Publish(StreamKey),
    /// An FLV audio or video payload of the accepted stream.
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Vec<u8>,
    },
    /// The publisher said it stopped (it may still close the connection after).
    Unpublished,
}

/// Why a publish is refused, as the publisher is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefusal {
    /// No channel has this stream key.
    WrongKey,
    /// The channel already has a publisher.
    AlreadyLive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    No,
    Asked,
    Live,
    Over,
}

pub struct RtmpSession {
    app: String,
    handshake: Handshake,
    input: Vec<u8>,
    reader: ChunkReader,
    out_chunk_size: usize,
    output: Vec<u8>,
    events: VecDeque<SessionEvent>,
    connected: bool,
    stream_created: bool,
    publishing: Publishing,
    received: u64,
    ack_window: Option<u32>,
    acked: u64,
}

impl RtmpSession {
    /// A session accepting publishers to application `app` (`live` in
    /// `rtmp://HOST/live/KEY`).
    pub fn new(app: &str) -> RtmpSession {
        RtmpSession {
            app: app.to_owned(),
            handshake: Handshake::Start,
            input: Vec::new(),
            reader: ChunkReader::new(MAX_SETUP_MESSAGE_BYTES),
            out_chunk_size: DEFAULT_CHUNK_SIZE,
            output: Vec::new(),
            events: VecDeque::new(),
            connected: false,
            stream_created: false,
            publishing: Publishing::No,
            received: 0,
            ack_window: None,
            acked: 0,
        }
    }

    /// Bytes from the publisher. An error ends the session: send what
    /// [`RtmpSession::take_output`] holds, then close.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        self.received += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = self.consume(&mut pos);
        self.input.drain(..pos);
        if let Some(window) = self.ack_window {
            if self.received - self.acked >= u64::from(window) {
                self.acked = self.received;
                let sequence = (self.received as u32).to_be_bytes();
                self.send(2, ACKNOWLEDGEMENT, 0, &sequence);
            }
        }
        result
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the publisher.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn accept_publish(&mut self) {
        if self.publishing != Publishing::Asked {
            return;
        }
        self.publishing = Publishing::Live;
        self.reader.set_max_message(MAX_MESSAGE_BYTES);
        // User control: Stream Begin.
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&STREAM_ID.to_be_bytes());
        self.send(2, USER_CONTROL, 0, &begin);
        self.on_status("status", "NetStream.Publish.Start", "Publishing.");
    }

    /// Tells the publisher why it may not publish; the driver then closes the connection.
    pub fn refuse_publish(&mut self, refusal: PublishRefusal) {
        self.publishing = Publishing::Over;
        let description = match refusal {
            PublishRefusal::WrongKey => "Wrong stream key.",
            PublishRefusal::AlreadyLive => "This channel already has a publisher.",
        };
        self.on_status("error", "NetStream.Publish.BadName", description);
    }

    fn consume(&mut self, pos: &mut usize) -> Result<(), IngestError> {
        while self.handshake != Handshake::Done {
            let used = self
                .handshake
                .advance(&self.input[*pos..], &mut self.output)?;
            if used == 0 {
                return Ok(());
            }
            *pos += used;
        }
        while let Some((used, message)) = self.reader.read(&self.input[*pos..])? {
            *pos += used;
            if let Some(message) = message {
                self.message(
                    message.type_id,
                    message.stream_id,
                    message.timestamp,
                    message.payload,
                )?;
            }
        }
        Ok(())
    }

    fn message(
        &mut self,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: Vec<u8>,
    ) -> Result<(), IngestError> {
        let word = || -> Result<u32, IngestError> {
            payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| IngestError::Rtmp(format!("message type {type_id} too short")))
        };
        match type_id {
            SET_CHUNK_SIZE => self.reader.set_chunk_size(word()?)?,
            ABORT => self.reader.abort(word()?),
            WINDOW_ACK_SIZE => self.ack_window = Some(word()?.max(1)),
            ACKNOWLEDGEMENT | USER_CONTROL | SET_PEER_BANDWIDTH => {}
            AUDIO | VIDEO => {
                if self.publishing != Publishing::Live || stream_id != STREAM_ID {
                    return Err(IngestError::Rtmp(
                        "media before the publish was accepted".into(),
                    ));
                }
                let kind = if type_id == AUDIO {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                };
                self.events.push_back(SessionEvent::Media {
                    kind,
                    timestamp,
                    payload,
                });
            }
            COMMAND_AMF0 | COMMAND_AMF3 | DATA_AMF0 | DATA_AMF3
                if payload.len() > MAX_SETUP_MESSAGE_BYTES =>
            {
                // Commands and metadata are small; a huge one would only cost memory to decode.
                return Err(IngestError::TooLarge {
                    what: "RTMP command",
                    size: payload.len(),
                    limit: MAX_SETUP_MESSAGE_BYTES,
                });
            }
            COMMAND_AMF0 => self.command(&amf0::decode_all(&payload)?, stream_id)?,
            // An AMF3 command is AMF0 behind one format byte.
            COMMAND_AMF3 => {
                let body = payload.get(1..).unwrap_or_default();
                self.command(&amf0::decode_all(body)?, stream_id)?;
            }
            // Metadata (`@setDataFrame onMetaData`): the remuxer reads the same from the
            // codec configurations.
            DATA_AMF0 | DATA_AMF3 => {}
            _ => {}
        }
        Ok(())
    }

    fn command(&mut self, values: &[Amf], stream_id: u32) -> Result<(), IngestError> {
        let name = values.first().and_then(Amf::as_str).unwrap_or("");
        let transaction = values.get(1).and_then(Amf::as_number).unwrap_or(0.0);
        match name {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.property("app"))
                    .and_then(Amf::as_str)
                    .unwrap_or("");
                if app.trim_end_matches('/') != self.app {
                    let description = format!(
                        "No application {app:?} here: publish to rtmp://HOST:PORT/{}/STREAM_KEY.",
                        self.app
                    );
                    self.reply(
                        "_error",
                        transaction,
                        Amf::Null,
                        status("error", "NetConnection.Connect.Rejected", &description),
                    );
                    return Err(IngestError::Rtmp(format!(
                        "a client asked for application {app:?}, not {:?}",
                        self.app
                    )));
                }
                self.connected = true;
                self.send(2, WINDOW_ACK_SIZE, 0, &WINDOW.to_be_bytes());
                let mut bandwidth = WINDOW.to_be_bytes().to_vec();
                bandwidth.push(2); // dynamic
                self.send(2, SET_PEER_BANDWIDTH, 0, &bandwidth);
                self.send(2, SET_CHUNK_SIZE, 0, &(OUT_CHUNK_SIZE as u32).to_be_bytes());
                self.out_chunk_size = OUT_CHUNK_SIZE;
                let properties = object(&[
                    ("fmsVer", string("FMS/3,0,1,123")),
                    ("capabilities", Amf::Number(31.0)),
                ]);
                let mut information = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                if let Amf::Object(props) = &mut information {
                    props.push(("objectEncoding".into(), Amf::Number(0.0)));
                }
                self.reply("_result", transaction, properties, information);
            }
            "createStream" => {
                self.require_connected(name)?;
                self.stream_created = true;
                self.reply(
                    "_result",
                    transaction,
                    Amf::Null,
                    Amf::Number(f64::from(STREAM_ID)),
                );
            }
            "publish" => {
                self.require_connected(name)?;
                if !self.stream_created || stream_id != STREAM_ID {
                    return Err(IngestError::Rtmp(
                        "publish on a stream never created".into(),
                    ));
                }
                if self.publishing != Publishing::No {
                    return Err(IngestError::Rtmp(
                        "a second publish on one connection".into(),
                    ));
                }
                let name = values.get(3).and_then(Amf::as_str).unwrap_or("");
                // Some encoders append "?parameters" to the key.
                let key = name.split('?').next().unwrap_or("");
                let key = StreamKey::new(key).map_err(|_| {
                    IngestError::Rtmp(format!(
                        "publish with a stream key of {} bytes (1 to {MAX_KEY_BYTES})",
                        key.len()
                    ))
                })?;
                self.publishing = Publishing::Asked;
                self.events.push_back(SessionEvent::Publish(key));
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if self.publishing == Publishing::Live {
                    self.publishing = Publishing::Over;
                    self.events.push_back(SessionEvent::Unpublished);
                }
            }
            "play" | "play2" => {
                return Err(IngestError::Rtmp(
                    "a client asked to play: this server only takes publishers".into(),
                ));
            }
            // releaseStream, FCPublish, getStreamLength and the like: answered so that
            // clients waiting for a reply go on.
            _ => {
                if transaction != 0.0 {
                    self.reply("_result", transaction, Amf::Null, Amf::Undefined);
                }
            }
        }
        Ok(())
    }

    fn require_connected(&self, command: &str) -> Result<(), IngestError> {
        if self.connected {
            Ok(())
        } else {
            Err(IngestError::Rtmp(format!("{command} before connect")))
        }
    }

    fn reply(&mut self, name: &str, transaction: f64, first: Amf, second: Amf) {
        let body = amf0::encode(&[string(name), Amf::Number(transaction), first, second]);
        self.send(3, COMMAND_AMF0, 0, &body);
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str) {
        let body = amf0::encode(&[
            string("onStatus"),
            Amf::Number(0.0),
            Amf::Null,
            status(level, code, description),
        ]);
        self.send(5, COMMAND_AMF0, STREAM_ID, &body);
    }

    fn send(&mut self, chunk_stream: u8, type_id: u8, stream_id: u32, payload: &[u8]) {
        write_message(
            &mut self.output,
            chunk_stream,
            type_id,
            stream_id,
            payload,
            self.out_chunk_size,
        );
    }
}

fn status(level: &str, code: &str, description: &str) -> Amf {
    object(&[
        ("level", string(level)),
        ("code", string(code)),
        ("description", string(description)),
    ])
}
