//! One peer message as it crosses a link: its encoding in two parts, a head and, for a
//! piece, the piece's data as a shared `Bytes` handle rather than a copy.
//!
//! A data channel sends a frame as one message ([`Frame::to_vec`]), exactly
//! [`PeerMessage::encode`]'s bytes. A simulator hands the frame itself to the receiver,
//! which decodes it with [`PeerMessage::decode_frame`]: the same header parsing and the same
//! checks, but the data stays the sender's buffer, so ten thousand simulated peers hold one
//! copy of each chunk between them, as ten thousand real peers hold one each.

use bytes::Bytes;

use crate::peer_message::{parse_piece_header, piece, piece_header};
use crate::{PeerMessage, ProtocolError, MAX_PEER_MESSAGE_BYTES, PIECE_HEADER_BYTES};

/// The label of a link's ordered, reliable data channel: every message but pieces, so
/// a `Hello` comes first and a manifest before the pieces it vouches for (mostly: see
/// [`PIECES_CHANNEL`]).
pub const CONTROL_CHANNEL: &str = "swarm";

/// The label of a link's second data channel, for pieces only, unordered so that a lost
/// packet delays only its own piece rather than every message behind it. The offerer
/// decides whether a link has one; a piece on it may overtake the manifest sent before
/// it, which the receiver holds it for. Without one, pieces go on the control channel.
pub const PIECES_CHANNEL: &str = "pieces";

/// How the offerer of a link carries pieces; an answerer takes the channels it is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PiecesChannel {
    /// On the ordered control channel with everything else.
    Shared,
    /// On a channel of their own, unordered and reliable: a lost packet delays only its
    /// piece, not every message behind it. What the drivers do unless told otherwise.
    #[default]
    Unordered,
    /// Unordered, and given up after this many milliseconds (`maxPacketLifeTime`): a
    /// piece that cannot arrive in time is not sent again; the swarm asks again.
    Lifetime(u16),
}

impl std::str::FromStr for PiecesChannel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "shared" => Ok(PiecesChannel::Shared),
            "unordered" => Ok(PiecesChannel::Unordered),
            _ => text
                .strip_prefix("lifetime:")
                .and_then(|ms| ms.parse::<u16>().ok())
                .filter(|&ms| ms > 0)
                .map(PiecesChannel::Lifetime)
                .ok_or_else(|| {
                    format!("`{text}`: expected shared, unordered or lifetime:MS (1-65535)")
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    head: Bytes,
    /// A piece's data; empty for every other message (all of it is in `head`).
    body: Bytes,
}

impl Frame {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one buffer, as a data channel sends it.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.body);
        out
    }

    /// The message's type byte (its first), for counting messages by kind; `None` for an
    /// empty frame.
    pub fn tag(&self) -> Option<u8> {
        self.head.first().copied()
    }

    /// Whether this frame is a piece: drivers send pieces on a link's pieces channel
    /// ([`PIECES_CHANNEL`], unordered) when it has one, everything else on the ordered
    /// [`CONTROL_CHANNEL`].
    pub fn is_piece(&self) -> bool {
        !self.body.is_empty() || PeerMessage::peek_piece(&self.head).is_some()
    }

    /// The chunk, offset and data length of a piece, read from its header alone; `None`
    /// for any other message.
    pub fn peek_piece(&self) -> Option<(crate::ChunkSeq, u32, usize)> {
        if self.body.is_empty() {
            return PeerMessage::peek_piece(&self.head);
        }
        let (_, seq, offset, _) = parse_piece_header(&self.head).ok()?;
        Some((seq, offset, self.body.len()))
    }

    /// This frame with its data replaced by `change`'s copy of it (a test's polluter).
    pub fn with_changed_data(self, change: impl FnOnce(&mut [u8])) -> Frame {
        if self.body.is_empty() {
            let mut head = self.head.to_vec();
            if let Some(data) = head.get_mut(PIECE_HEADER_BYTES..) {
                change(data);
            }
            return Frame::from(head);
        }
        let mut body = self.body.to_vec();
        change(&mut body);
        Frame {
            head: self.head,
            body: Bytes::from(body),
        }
    }
}

/// A message received whole (from a data channel): all of it is the head.
impl From<Bytes> for Frame {
    fn from(head: Bytes) -> Frame {
        Frame {
            head,
            body: Bytes::new(),
        }
    }
}

impl From<Vec<u8>> for Frame {
    fn from(head: Vec<u8>) -> Frame {
        Frame::from(Bytes::from(head))
    }
}

impl PeerMessage {
    /// The message as a frame: a piece's data is shared, not copied.
    pub fn frame(&self) -> Frame {
        match self {
            PeerMessage::Piece {
                req,
                seq,
                offset,
                total,
                data,
            } => {
                let mut head = Vec::with_capacity(PIECE_HEADER_BYTES);
                piece_header(&mut head, *req, *seq, *offset, *total);
                Frame {
                    head: Bytes::from(head),
                    body: data.clone(),
                }
            }
            other => Frame::from(other.encode()),
        }
    }

    /// Decodes a frame as [`PeerMessage::decode_shared`] decodes its bytes, without
    /// joining its parts: a piece keeps the frame's data buffer.
    pub fn decode_frame(frame: &Frame) -> Result<PeerMessage, ProtocolError> {
        if frame.body.is_empty() {
            return PeerMessage::decode_shared(&frame.head);
        }
        if frame.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(ProtocolError::TooLarge {
                len: frame.len(),
                max: MAX_PEER_MESSAGE_BYTES,
            });
        }
        let (req, seq, offset, total) = parse_piece_header(&frame.head)?;
        piece(req, seq, offset, total, frame.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkSeq, RequestId};

    fn a_piece() -> PeerMessage {
        PeerMessage::Piece {
            req: RequestId(3),
            seq: ChunkSeq(9),
            offset: 0,
            total: 40_000,
            data: Bytes::from(vec![5u8; 16_000]),
        }
    }

    #[test]
    fn how_pieces_travel_is_parsed_and_nonsense_is_named() {
        assert_eq!("shared".parse(), Ok(PiecesChannel::Shared));
        assert_eq!("unordered".parse(), Ok(PiecesChannel::Unordered));
        assert_eq!("lifetime:900".parse(), Ok(PiecesChannel::Lifetime(900)));
        for bad in ["lifetime:0", "lifetime:70000", "lifetime:", "ordered", ""] {
            let err = bad.parse::<PiecesChannel>().unwrap_err();
            assert!(
                err.contains("expected shared, unordered or lifetime:MS"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_frame_is_the_encoding_and_decodes_to_the_same_message_sharing_its_data() {
        let others = [
            PeerMessage::Cancel { req: RequestId(1) },
            PeerMessage::Absent {
                req: RequestId(2),
                seq: ChunkSeq(4),
            },
        ];
        for message in others.into_iter().chain([a_piece()]) {
            let frame = message.frame();
            assert_eq!(frame.to_vec(), message.encode());
            assert_eq!(frame.len(), message.encoded_len());
            assert_eq!(PeerMessage::decode_frame(&frame).unwrap(), message);
            let whole = Frame::from(message.encode());
            assert_eq!(PeerMessage::decode_frame(&whole).unwrap(), message);
            let is_piece = matches!(message, PeerMessage::Piece { .. });
            assert_eq!(frame.is_piece(), is_piece, "{message:?}");
            assert_eq!(whole.is_piece(), is_piece, "received whole: {message:?}");
        }
        let message = a_piece();
        let PeerMessage::Piece { data: sent, .. } = &message else {
            unreachable!()
        };
        let Ok(PeerMessage::Piece { data: got, .. }) = PeerMessage::decode_frame(&message.frame())
        else {
            panic!("a piece decodes to a piece")
        };
        assert_eq!(got.as_ptr(), sent.as_ptr(), "the same buffer, not a copy");
        assert_eq!(message.frame().peek_piece(), Some((ChunkSeq(9), 0, 16_000)));
    }

    #[test]
    fn a_frame_gets_the_checks_a_whole_message_gets() {
        let frame = a_piece().frame();
        // A head that is not a piece header, with data behind it.
        let bogus = Frame {
            head: Bytes::from(PeerMessage::Cancel { req: RequestId(1) }.encode()),
            body: frame.body.clone(),
        };
        assert!(PeerMessage::decode_frame(&bogus).is_err());
        // Data past the chunk's end, as a whole message would be refused.
        let past_end = PeerMessage::Piece {
            req: RequestId(3),
            seq: ChunkSeq(9),
            offset: 30_000,
            total: 40_000,
            data: Bytes::from(vec![5u8; 16_000]),
        };
        let whole = PeerMessage::decode(&past_end.encode());
        assert_eq!(PeerMessage::decode_frame(&past_end.frame()), whole);
        assert!(whole.is_err());
        // Too large for one data-channel message.
        let oversized = Frame {
            head: frame.head.clone(),
            body: Bytes::from(vec![0u8; MAX_PEER_MESSAGE_BYTES]),
        };
        assert!(matches!(
            PeerMessage::decode_frame(&oversized),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_changed_frame_leaves_the_original_alone() {
        let frame = a_piece().frame();
        let changed = frame.clone().with_changed_data(|data| data[0] ^= 1);
        assert_ne!(changed.to_vec(), frame.to_vec());
        assert_eq!(changed.len(), frame.len());
        assert_eq!(frame.to_vec(), a_piece().encode());
    }
}
