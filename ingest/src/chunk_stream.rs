//! The RTMP chunk stream: messages split into chunks of a negotiated size, interleaved by
//! chunk stream id, with compressed headers. Reading is bounded: message size, chunk size,
//! chunk streams in use and bytes held in partial messages.

use std::collections::HashMap;

use crate::IngestError;

/// Largest message once publishing: a keyframe of high-bitrate 4K video fits.
pub(crate) const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest message before a publish is accepted: commands are a few hundred bytes, and a
/// client without a stream key must not make us hold megabytes.
pub(crate) const MAX_SETUP_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest chunk size a client may set.
pub(crate) const MAX_CHUNK_SIZE: usize = 1 << 24;
/// Chunk streams one connection may use (publishers use 3 to 6).
const MAX_CHUNK_STREAMS: usize = 64;
/// Bytes held across all partial messages.
const MAX_PARTIAL_BYTES: usize = 16 * 1024 * 1024;
/// The chunk size until the peer sets another.
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 128;

#[derive(Debug)]
pub(crate) struct Message {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct ChunkStreamState {
    /// Whether a full header was seen, so compressed ones have something to build on.
    known: bool,
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// Whether the last header carried an extended timestamp (continuations repeat it).
    extended: bool,
    partial: Vec<u8>,
    in_message: bool,
}

pub(crate) struct ChunkReader {
    chunk_size: usize,
    max_message: usize,
    streams: HashMap<u32, ChunkStreamState>,
    partial_bytes: usize,
}

fn rtmp_error(message: String) -> IngestError {
    IngestError::Rtmp(message)
}

impl ChunkReader {
    /// A reader refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> ChunkReader {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message,
            streams: HashMap::new(),
            partial_bytes: 0,
        }
    }

    /// Raises (or lowers) the largest message accepted from now on.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), IngestError> {
        let size = size as usize;
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(rtmp_error(format!(
                "chunk size {size}: must be 1 to {MAX_CHUNK_SIZE}"
            )));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Drops the partial message on `chunk_stream` (an Abort message).
    pub fn abort(&mut self, chunk_stream: u32) {
        if let Some(state) = self.streams.get_mut(&chunk_stream) {
            self.partial_bytes -= state.partial.len();
            state.partial = Vec::new();
            state.in_message = false;
        }
    }

    /// Reads one chunk from the front of `input`: `Ok(None)` when it is not all there yet,
    /// else how many bytes it took and the message it completed, if any.
    pub fn read(&mut self, input: &[u8]) -> Result<Option<(usize, Option<Message>)>, IngestError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let format = first >> 6;
        let (chunk_stream, mut at) = match first & 0x3f {
            0 => match input.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match input.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        if !self.streams.contains_key(&chunk_stream) && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(rtmp_error(format!(
                "more than {MAX_CHUNK_STREAMS} chunk streams in use"
            )));
        }
        let header_len = [11, 7, 3, 0][usize::from(format)];
        let Some(header) = input.get(at..at + header_len) else {
            return Ok(None);
        };
        at += header_len;
        let state = self.streams.entry(chunk_stream).or_default();
        if format != 0 && !state.known {
            return Err(rtmp_error(format!(
                "chunk stream {chunk_stream} begins with a compressed header (format {format})"
            )));
        }
        if format != 3 && state.in_message {
            return Err(rtmp_error(format!(
                "chunk stream {chunk_stream} starts a new message inside another"
            )));
        }
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let time_field = if format == 3 {
            None
        } else {
            Some(u24(&header[0..3]))
        };
        let extended = match time_field {
            Some(t) => t == 0xff_ffff,
            None => state.extended,
        };
        let time = if extended {
            let Some(b) = input.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            time_field.unwrap_or(state.delta)
        };
        let (length, type_id, stream_id) = match format {
            0 => (
                u24(&header[3..6]) as usize,
                header[6],
                u32::from_le_bytes([header[7], header[8], header[9], header[10]]),
            ),
            1 => (u24(&header[3..6]) as usize, header[6], state.stream_id),
            _ => (state.length, state.type_id, state.stream_id),
        };
        if length > self.max_message {
            return Err(IngestError::TooLarge {
                what: "RTMP message",
                size: length,
                limit: self.max_message,
            });
        }
        let done = if state.in_message {
            state.partial.len()
        } else {
            0
        };
        let take = (length - done).min(self.chunk_size);
        let Some(body) = input.get(at..at + take) else {
            return Ok(None);
        };
        at += take;
        // The whole chunk is here: only now does the state change.
        if !state.in_message {
            state.timestamp = match format {
                0 => time,
                _ => state.timestamp.wrapping_add(time),
            };
            state.delta = time;
            state.length = length;
            state.type_id = type_id;
            state.stream_id = stream_id;
            state.in_message = true;
        }
        state.known = true;
        state.extended = extended;
        if self.partial_bytes + take > MAX_PARTIAL_BYTES {
            return Err(IngestError::TooLarge {
                what: "partial RTMP messages",
                size: self.partial_bytes + take,
                limit: MAX_PARTIAL_BYTES,
            });
        }
        state.partial.extend_from_slice(body);
        self.partial_bytes += take;
        if state.partial.len() < state.length {
            return Ok(Some((at, None)));
        }
        state.in_message = false;
        self.partial_bytes -= state.partial.len();
        let message = Message {
            type_id: state.type_id,
            stream_id: state.stream_id,
            timestamp: state.timestamp,
            payload: std::mem::take(&mut state.partial),
        };
        Ok(Some((at, Some(message))))
    }
}

/// Writes `payload` as one message in chunks of `chunk_size`, on chunk stream `chunk_stream`
/// (2 to 63), timestamp 0.
pub(crate) fn write_message(
    out: &mut Vec<u8>,
    chunk_stream: u8,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) {
    debug_assert!(
        (2..64).contains(&chunk_stream),
        "a one-byte chunk stream id"
    );
    out.push(chunk_stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    let mut chunks = payload.chunks(chunk_size);
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for more in chunks {
        out.push(0xc0 | chunk_stream);
        out.extend_from_slice(more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut ChunkReader, mut input: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some((used, message)) = reader.read(input).unwrap() {
            input = &input[used..];
            out.extend(message);
        }
        assert!(input.is_empty(), "{} bytes unread", input.len());
        out
    }

    #[test]
    fn reads_back_what_it_writes_across_chunks() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        write_message(&mut wire, 4, 9, 1, &payload, 128);
        write_message(&mut wire, 4, 9, 1, &[], 128);
        let messages = read_all(&mut ChunkReader::new(MAX_MESSAGE_BYTES), &wire);
        assert_eq!(messages.len(), 2);
        assert_eq!((messages[0].type_id, messages[0].stream_id), (9, 1));
        assert_eq!(messages[0].payload, payload);
        assert!(messages[1].payload.is_empty());
    }

    #[test]
    fn compressed_headers_add_deltas_and_extended_times_repeat() {
        let mut wire = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 2, 8, 1, 0, 0, 0];
        wire.extend_from_slice(&0x0100_0000u32.to_be_bytes()); // extended timestamp
        wire.extend_from_slice(&[0xaa, 0xbb]);
        // Format 2: a delta of 40 ms, same length and type.
        wire.extend_from_slice(&[0x84, 0, 0, 40, 0xcc, 0xdd]);
        // Format 3: a new message with the same delta.
        wire.extend_from_slice(&[0xc4, 0xee, 0xff]);
        let times: Vec<u32> = read_all(&mut ChunkReader::new(MAX_MESSAGE_BYTES), &wire)
            .iter()
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(times, [0x0100_0000, 0x0100_0028, 0x0100_0050]);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut reader = ChunkReader::new(MAX_MESSAGE_BYTES);
        let err = reader.read(&[0x43, 0, 0, 0, 0, 0, 1, 20]).unwrap_err();
        assert!(err.to_string().contains("compressed header"), "{err}");
        let mut reader = ChunkReader::new(MAX_MESSAGE_BYTES);
        let err = reader
            .read(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0])
            .unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
        // Before a publish, 64 KiB is the most.
        let mut reader = ChunkReader::new(MAX_SETUP_MESSAGE_BYTES);
        let err = reader
            .read(&[0x03, 0, 0, 0, 0x01, 0x00, 0x01, 20, 0, 0, 0, 0])
            .unwrap_err();
        assert!(
            matches!(err, IngestError::TooLarge { limit: 65536, .. }),
            "{err}"
        );
        assert!(ChunkReader::new(MAX_MESSAGE_BYTES)
            .set_chunk_size(0x8000_0000)
            .is_err());
    }

    #[test]
    fn a_chunk_split_anywhere_waits_for_the_rest() {
        let mut wire = Vec::new();
        write_message(&mut wire, 3, 20, 0, &[7; 300], 128);
        for cut in 0..wire.len() {
            let mut reader = ChunkReader::new(MAX_MESSAGE_BYTES);
            let mut messages = Vec::new();
            let mut buf = wire[..cut].to_vec();
            let mut fed = cut;
            loop {
                match reader.read(&buf).unwrap() {
                    Some((used, message)) => {
                        buf.drain(..used);
                        messages.extend(message);
                    }
                    None if fed < wire.len() => {
                        buf.extend_from_slice(&wire[fed..]);
                        fed = wire.len();
                    }
                    None => break,
                }
            }
            assert_eq!(messages.len(), 1, "cut at {cut}");
            assert_eq!(messages[0].payload, [7; 300]);
        }
    }
}
