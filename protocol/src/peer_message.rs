//! Messages between peers on a data channel: a compact binary format, one message per
//! data-channel message. Layout: one tag byte, then big-endian fixed-width fields.

use crate::{ChunkSeq, ProtocolError, RequestId};

/// Largest peer message accepted. 16 KiB is the largest message every WebRTC stack takes
/// (the `webrtc` crate's receive limit among them) and bounds what one message can make a
/// peer allocate.
pub const MAX_PEER_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest piece of chunk data in one message: a piece and its 21-byte header fit in
/// [`MAX_PEER_MESSAGE_BYTES`].
pub const MAX_PIECE_BYTES: usize = MAX_PEER_MESSAGE_BYTES - 64;
/// Largest chunk a piece may claim to belong to (a 1-2 s fragment of HD video is ~1 MiB).
pub const MAX_CHUNK_BYTES: u32 = 16 * 1024 * 1024;
/// A buffer map lists at most this many chunks; a window of live chunks is far smaller.
pub const MAX_BUFFER_MAP_ENTRIES: usize = 1024;
const MAX_CODEC_BYTES: usize = 256;

const TAG_BUFFER_MAP: u8 = 0x01;
const TAG_HAVE: u8 = 0x02;
const TAG_REQUEST: u8 = 0x03;
const TAG_PIECE: u8 = 0x04;
const TAG_ABSENT: u8 = 0x05;
const TAG_CANCEL: u8 = 0x06;
const TAG_INIT: u8 = 0x07;

const FLAG_KEYFRAME: u8 = 0x01;

/// One chunk a peer holds, as listed in its buffer map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferMapEntry {
    pub seq: ChunkSeq,
    /// The chunk starts with a keyframe, so a joining viewer may start playing there.
    pub keyframe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// Sent once when a link opens: which chunks the sender holds.
    BufferMap {
        is_source: bool,
        entries: Vec<BufferMapEntry>,
    },
    /// The sender completed a chunk.
    Have { seq: ChunkSeq, keyframe: bool },
    /// Ask for a whole chunk; answered with its pieces, or `Absent`.
    Request { req: RequestId, seq: ChunkSeq },
    /// Part of a requested chunk.
    Piece {
        req: RequestId,
        seq: ChunkSeq,
        offset: u32,
        total: u32,
        data: Vec<u8>,
    },
    /// The sender no longer has (or will not send) the requested chunk.
    Absent { req: RequestId, seq: ChunkSeq },
    /// The requester no longer wants the chunk of this request.
    Cancel { req: RequestId },
    /// The stream's init segment and its MSE type, e.g. `video/mp4; codecs="avc1.64001f"`.
    Init { mime: String, data: Vec<u8> },
}

impl PeerMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            PeerMessage::BufferMap { is_source, entries } => {
                out.push(TAG_BUFFER_MAP);
                out.push(u8::from(*is_source));
                let entries = &entries[..entries.len().min(MAX_BUFFER_MAP_ENTRIES)];
                out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for entry in entries {
                    out.extend_from_slice(&entry.seq.0.to_be_bytes());
                    out.push(if entry.keyframe { FLAG_KEYFRAME } else { 0 });
                }
            }
            PeerMessage::Have { seq, keyframe } => {
                out.push(TAG_HAVE);
                out.extend_from_slice(&seq.0.to_be_bytes());
                out.push(if *keyframe { FLAG_KEYFRAME } else { 0 });
            }
            PeerMessage::Request { req, seq } => {
                out.push(TAG_REQUEST);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.extend_from_slice(&seq.0.to_be_bytes());
            }
            PeerMessage::Piece {
                req,
                seq,
                offset,
                total,
                data,
            } => {
                out.push(TAG_PIECE);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.extend_from_slice(&seq.0.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(data);
            }
            PeerMessage::Absent { req, seq } => {
                out.push(TAG_ABSENT);
                out.extend_from_slice(&req.0.to_be_bytes());
                out.extend_from_slice(&seq.0.to_be_bytes());
            }
            PeerMessage::Cancel { req } => {
                out.push(TAG_CANCEL);
                out.extend_from_slice(&req.0.to_be_bytes());
            }
            PeerMessage::Init { mime, data } => {
                out.push(TAG_INIT);
                out.extend_from_slice(&(mime.len() as u16).to_be_bytes());
                out.extend_from_slice(mime.as_bytes());
                out.extend_from_slice(data);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, ProtocolError> {
        if bytes.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                len: bytes.len(),
                max: MAX_PEER_MESSAGE_BYTES,
            });
        }
        let mut r = Reader { bytes };
        let message = match r.u8("tag")? {
            TAG_BUFFER_MAP => {
                let is_source = r.flag("is_source")?;
                let count = usize::from(r.u16("entry count")?);
                if count > MAX_BUFFER_MAP_ENTRIES {
                    return Err(ProtocolError::Invalid {
                        field: "entry count",
                        reason: format!("{count} over the limit of {MAX_BUFFER_MAP_ENTRIES}"),
                    });
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let seq = ChunkSeq(r.u64("entry seq")?);
                    let keyframe = r.chunk_flags("entry flags")?;
                    entries.push(BufferMapEntry { seq, keyframe });
                }
                PeerMessage::BufferMap { is_source, entries }
            }
            TAG_HAVE => PeerMessage::Have {
                seq: ChunkSeq(r.u64("seq")?),
                keyframe: r.chunk_flags("flags")?,
            },
            TAG_REQUEST => PeerMessage::Request {
                req: RequestId(r.u32("req")?),
                seq: ChunkSeq(r.u64("seq")?),
            },
            TAG_PIECE => {
                let req = RequestId(r.u32("req")?);
                let seq = ChunkSeq(r.u64("seq")?);
                let offset = r.u32("offset")?;
                let total = r.u32("total")?;
                let data = r.rest().to_vec();
                if total == 0 || total > MAX_CHUNK_BYTES {
                    return Err(ProtocolError::Invalid {
                        field: "total",
                        reason: format!("{total} not in 1..={MAX_CHUNK_BYTES}"),
                    });
                }
                if data.is_empty() || data.len() > MAX_PIECE_BYTES {
                    return Err(ProtocolError::Invalid {
                        field: "data",
                        reason: format!("{} bytes not in 1..={MAX_PIECE_BYTES}", data.len()),
                    });
                }
                if u64::from(offset) + data.len() as u64 > u64::from(total) {
                    return Err(ProtocolError::Invalid {
                        field: "offset",
                        reason: format!(
                            "piece {offset}+{} runs past chunk end {total}",
                            data.len()
                        ),
                    });
                }
                PeerMessage::Piece {
                    req,
                    seq,
                    offset,
                    total,
                    data,
                }
            }
            TAG_ABSENT => PeerMessage::Absent {
                req: RequestId(r.u32("req")?),
                seq: ChunkSeq(r.u64("seq")?),
            },
            TAG_CANCEL => PeerMessage::Cancel {
                req: RequestId(r.u32("req")?),
            },
            TAG_INIT => {
                let len = usize::from(r.u16("mime length")?);
                if len > MAX_CODEC_BYTES {
                    return Err(ProtocolError::Invalid {
                        field: "mime",
                        reason: format!("{len} bytes over {MAX_CODEC_BYTES}"),
                    });
                }
                let mime = std::str::from_utf8(r.take(len, "mime")?)
                    .map_err(|_| ProtocolError::Invalid {
                        field: "mime",
                        reason: "not UTF-8".into(),
                    })?
                    .to_owned();
                let data = r.rest().to_vec();
                if data.is_empty() {
                    return Err(ProtocolError::Invalid {
                        field: "init data",
                        reason: "empty".into(),
                    });
                }
                PeerMessage::Init { mime, data }
            }
            tag => return Err(ProtocolError::UnknownTag(tag)),
        };
        if !r.bytes.is_empty() {
            return Err(ProtocolError::TrailingBytes {
                count: r.bytes.len(),
            });
        }
        Ok(message)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.bytes.len() < n {
            return Err(ProtocolError::Truncated {
                field,
                needed: n - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, field)?[0])
    }

    /// A boolean byte: exactly 0 or 1, so every message has one encoding.
    fn flag(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::Invalid {
                field,
                reason: format!("{other} is not 0 or 1"),
            }),
        }
    }

    /// Chunk flags: only the keyframe bit is defined; others are refused, not ignored.
    fn chunk_flags(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let flags = self.u8(field)?;
        if flags & !FLAG_KEYFRAME != 0 {
            return Err(ProtocolError::Invalid {
                field,
                reason: format!("unknown bits {:#04x}", flags & !FLAG_KEYFRAME),
            });
        }
        Ok(flags & FLAG_KEYFRAME != 0)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMessage> {
        vec![
            PeerMessage::BufferMap {
                is_source: true,
                entries: vec![
                    BufferMapEntry {
                        seq: ChunkSeq(5),
                        keyframe: true,
                    },
                    BufferMapEntry {
                        seq: ChunkSeq(6),
                        keyframe: false,
                    },
                ],
            },
            PeerMessage::BufferMap {
                is_source: false,
                entries: vec![],
            },
            PeerMessage::Have {
                seq: ChunkSeq(u64::MAX),
                keyframe: true,
            },
            PeerMessage::Request {
                req: RequestId(9),
                seq: ChunkSeq(3),
            },
            PeerMessage::Piece {
                req: RequestId(9),
                seq: ChunkSeq(3),
                offset: 10,
                total: 13,
                data: vec![1, 2, 3],
            },
            PeerMessage::Absent {
                req: RequestId(9),
                seq: ChunkSeq(3),
            },
            PeerMessage::Cancel { req: RequestId(1) },
            PeerMessage::Init {
                mime: "video/mp4; codecs=\"avc1.64001f\"".into(),
                data: vec![0; 700],
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            assert_eq!(PeerMessage::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for message in samples() {
            let bytes = message.encode();
            for cut in 0..bytes.len() {
                let result = PeerMessage::decode(&bytes[..cut]);
                // A piece or init cut inside its payload is still well-formed framing, but
                // then the offset/total or emptiness checks must catch it, or it is a
                // shorter valid message that differs from the original.
                assert_ne!(
                    result.as_ref().ok(),
                    Some(&message),
                    "{message:?} cut at {cut}"
                );
                if cut < 5 {
                    assert!(
                        result.is_err(),
                        "{message:?} cut at {cut} decoded as {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn hostile_input_is_refused_precisely() {
        assert_eq!(
            PeerMessage::decode(&[0xee]),
            Err(ProtocolError::UnknownTag(0xee))
        );
        assert!(matches!(
            PeerMessage::decode(&vec![TAG_PIECE; MAX_PEER_MESSAGE_BYTES + 1]),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut trailing = PeerMessage::Cancel { req: RequestId(1) }.encode();
        trailing.push(0);
        assert_eq!(
            PeerMessage::decode(&trailing),
            Err(ProtocolError::TrailingBytes { count: 1 })
        );
        let past_end = PeerMessage::Piece {
            req: RequestId(1),
            seq: ChunkSeq(1),
            offset: 12,
            total: 13,
            data: vec![1, 2],
        };
        assert!(matches!(
            PeerMessage::decode(&past_end.encode()),
            Err(ProtocolError::Invalid {
                field: "offset",
                ..
            })
        ));
        let huge_map = [TAG_BUFFER_MAP, 0, 0xff, 0xff];
        assert!(matches!(
            PeerMessage::decode(&huge_map),
            Err(ProtocolError::Invalid {
                field: "entry count",
                ..
            })
        ));
    }

    #[test]
    fn unknown_flag_bits_are_refused_so_each_message_has_one_encoding() {
        // Found by the peer_message fuzz target: flags 0x03 decoded, re-encoded as 0x01.
        let found = [
            1, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 3, 42, 0, 0, 0, 0, 0, 0, 6, 0,
        ];
        assert!(matches!(
            PeerMessage::decode(&found),
            Err(ProtocolError::Invalid {
                field: "entry flags",
                ..
            })
        ));
        let have = [TAG_HAVE, 0, 0, 0, 0, 0, 0, 0, 9, 0x81];
        assert!(matches!(
            PeerMessage::decode(&have),
            Err(ProtocolError::Invalid { field: "flags", .. })
        ));
        let source = [TAG_BUFFER_MAP, 2, 0, 0];
        assert!(matches!(
            PeerMessage::decode(&source),
            Err(ProtocolError::Invalid {
                field: "is_source",
                ..
            })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic spray of byte strings; the fuzz target covers this more deeply.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let _ = PeerMessage::decode(&bytes);
        }
    }
}
