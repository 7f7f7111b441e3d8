//! What an edge holds of one channel: the current broadcast's signed init segment and a
//! bounded window of its chunks, each with its signed manifest, encoded once as served.

use std::collections::BTreeMap;

use bytes::Bytes;
use std::time::Instant;

use protocol::{ChunkSeq, EdgeIndex, PeerMessage, SessionId, EDGE_VERSION};
use swarm::Signed;

/// Earlier broadcasts remembered, to answer their URLs 410 rather than 404.
const PAST_SESSIONS: usize = 4;
/// Chunks kept: about half a minute at the usual 1-2 s chunks, well past any viewer's
/// deadline (late live data is worthless) and the time a CDN takes to fetch one.
pub const KEEP_CHUNKS: usize = 30;
/// A ceiling on the bytes kept per channel, whatever the bitrate.
pub const KEEP_BYTES: usize = 64 * 1024 * 1024;
/// A chunk missing this many chunks behind the newest will not come any more: the edge's
/// own swarm skipped it.
const MISSED_AFTER_CHUNKS: u64 = 3;
/// How far past the newest chunk a request may wait: further ones are not cut soon.
pub const AHEAD_CHUNKS: u64 = 2;

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Here(Bytes),
    /// Not here yet, but expected soon: worth waiting for.
    NotYet,
    /// Evicted, or of an earlier broadcast: it will never be here (a cache may keep this).
    Gone,
    /// The edge's own swarm skipped it: it will most likely not come.
    Missed,
    /// Too far ahead to be cut soon, or of a broadcast this edge has not seen (a newer
    /// one it has yet to hear of).
    Unknown,
}

#[derive(Debug)]
struct Shelved {
    keyframe: bool,
    /// The encoded `PeerMessage::Manifest`.
    manifest: Bytes,
    data: Bytes,
}

/// One channel's content. Only the current broadcast is kept: a new one clears it.
#[derive(Debug)]
pub struct Shelf {
    /// At most this many chunks, and this many bytes of them.
    keep: (usize, usize),
    session: Option<SessionId>,
    /// Broadcasts this shelf held before, newest last.
    past: Vec<SessionId>,
    /// The encoded `PeerMessage::Init`.
    init: Option<Bytes>,
    chunks: BTreeMap<ChunkSeq, Shelved>,
    bytes: usize,
    /// Everything below this was evicted.
    evicted_below: Option<ChunkSeq>,
    /// When the newest chunk came.
    newest_at: Option<Instant>,
}

impl Default for Shelf {
    fn default() -> Shelf {
        Shelf::keeping(KEEP_CHUNKS, KEEP_BYTES)
    }
}

impl Shelf {
    /// A shelf of at most `chunks` chunks, and `bytes` bytes of them (but one chunk
    /// whatever its size).
    pub fn keeping(chunks: usize, bytes: usize) -> Shelf {
        Shelf {
            keep: (chunks, bytes),
            session: None,
            past: Vec::new(),
            init: None,
            chunks: BTreeMap::new(),
            bytes: 0,
            evicted_below: None,
            newest_at: None,
        }
    }

    /// Takes verified content of `session`, come at `now`; a new session replaces what
    /// was held.
    pub fn store(&mut self, now: Instant, session: SessionId, content: Signed) {
        if self.session != Some(session) {
            let mut past = std::mem::take(&mut self.past);
            past.extend(self.session);
            past.retain(|s| *s != session);
            let excess = past.len().saturating_sub(PAST_SESSIONS);
            past.drain(..excess);
            *self = Shelf {
                session: Some(session),
                past,
                ..Shelf::keeping(self.keep.0, self.keep.1)
            };
        }
        match content {
            Signed::Init {
                mime,
                data,
                signature,
            } => {
                let message = PeerMessage::Init {
                    mime,
                    data,
                    signature,
                };
                self.init = Some(Bytes::from(message.encode()));
            }
            Signed::Chunk { manifest, chunk } => {
                if self.evicted_below.is_some_and(|below| chunk.seq < below)
                    || self.chunks.contains_key(&chunk.seq)
                {
                    return;
                }
                let data = Bytes::from(chunk.data.to_vec());
                self.bytes += data.len();
                let shelved = Shelved {
                    keyframe: chunk.keyframe,
                    manifest: Bytes::from(PeerMessage::Manifest(manifest).encode()),
                    data,
                };
                if self
                    .chunks
                    .last_key_value()
                    .is_none_or(|(newest, _)| chunk.seq > *newest)
                {
                    self.newest_at = Some(now);
                }
                self.chunks.insert(chunk.seq, shelved);
                self.evict();
            }
        }
    }

    pub fn init(&self, session: SessionId) -> Lookup {
        if let Some(other) = self.other_session(session) {
            return other;
        }
        match &self.init {
            Some(init) => Lookup::Here(init.clone()),
            None => Lookup::NotYet,
        }
    }

    /// The answer for a session other than the one held: gone if held before, otherwise
    /// unknown (a newer one this edge has not heard of yet, or none at all).
    fn other_session(&self, session: SessionId) -> Option<Lookup> {
        match self.session {
            Some(ours) if ours == session => None,
            _ if self.past.contains(&session) => Some(Lookup::Gone),
            Some(_) => Some(Lookup::Unknown),
            None => Some(Lookup::NotYet),
        }
    }

    pub fn manifest(&self, session: SessionId, seq: ChunkSeq) -> Lookup {
        self.lookup(session, seq, |s| &s.manifest)
    }

    pub fn chunk(&self, session: SessionId, seq: ChunkSeq) -> Lookup {
        self.lookup(session, seq, |s| &s.data)
    }

    /// The window as the index lists it at `now`; `None` before the first chunk.
    pub fn index(&self, now: Instant) -> Option<EdgeIndex> {
        let session = self.session?;
        let (oldest, _) = self.chunks.first_key_value()?;
        let (newest, _) = self.chunks.last_key_value()?;
        let age = self.newest_at.map(|at| now.saturating_duration_since(at));
        Some(EdgeIndex {
            version: EDGE_VERSION,
            session: session.to_string(),
            oldest: oldest.0,
            newest: newest.0,
            newest_age_ms: age.map_or(0, |age| age.as_millis() as u64),
            keyframes: self
                .chunks
                .iter()
                .filter(|(_, s)| s.keyframe)
                .map(|(seq, _)| seq.0)
                .collect(),
        })
    }

    /// Bytes of chunk data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn lookup(&self, session: SessionId, seq: ChunkSeq, part: fn(&Shelved) -> &Bytes) -> Lookup {
        if let Some(other) = self.other_session(session) {
            return other;
        }
        if let Some(shelved) = self.chunks.get(&seq) {
            return Lookup::Here(part(shelved).clone());
        }
        if self.evicted_below.is_some_and(|below| seq < below) {
            return Lookup::Gone;
        }
        let Some((&newest, _)) = self.chunks.last_key_value() else {
            return Lookup::NotYet;
        };
        if seq.0.saturating_add(MISSED_AFTER_CHUNKS) <= newest.0 {
            Lookup::Missed
        } else if seq.0 > newest.0.saturating_add(AHEAD_CHUNKS) {
            Lookup::Unknown
        } else {
            Lookup::NotYet
        }
    }

    fn evict(&mut self) {
        let (chunks, bytes) = self.keep;
        while self.chunks.len() > chunks || (self.bytes > bytes && self.chunks.len() > 1) {
            let (seq, gone) = self.chunks.pop_first().expect("more than one chunk held");
            self.bytes -= gone.data.len();
            self.evicted_below = Some(seq.next());
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Broadcast, ChannelSigner, ChunkManifest, KeySignature, PIECE_BYTES};
    use swarm::Chunk;

    use super::*;

    const SESSION: SessionId = SessionId(7);

    fn chunk(seq: u64, len: usize) -> Signed {
        let data = vec![seq as u8; len];
        let manifest = ChunkManifest::sign(
            &ChannelSigner::from_seed(&[1; 32]),
            &Broadcast::default(),
            ChunkSeq(seq),
            seq.is_multiple_of(2),
            data.chunks(PIECE_BYTES),
        )
        .expect("a small chunk signs");
        Signed::Chunk {
            manifest,
            chunk: Chunk {
                seq: ChunkSeq(seq),
                keyframe: seq.is_multiple_of(2),
                data: data.into(),
            },
        }
    }

    #[test]
    fn chunks_are_served_within_the_window_and_gone_after_it() {
        let mut shelf = Shelf::default();
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(0)), Lookup::NotYet);
        for seq in 0..KEEP_CHUNKS as u64 + 5 {
            shelf.store(Instant::now(), SESSION, chunk(seq, 100));
        }
        let newest = KEEP_CHUNKS as u64 + 4;
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(4)), Lookup::Gone, "evicted");
        let Lookup::Here(data) = shelf.chunk(SESSION, ChunkSeq(5)) else {
            panic!("the oldest kept chunk is missing");
        };
        assert_eq!(&data[..], &[5u8; 100][..]);
        let Lookup::Here(manifest) = shelf.manifest(SESSION, ChunkSeq(newest)) else {
            panic!("the newest manifest is missing");
        };
        assert!(matches!(
            PeerMessage::decode(&manifest),
            Ok(PeerMessage::Manifest(m)) if m.seq == ChunkSeq(newest)
        ));
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(newest + 1)), Lookup::NotYet);
        assert_eq!(
            shelf.chunk(SESSION, ChunkSeq(newest + AHEAD_CHUNKS)),
            Lookup::NotYet
        );
        assert_eq!(
            shelf.chunk(SESSION, ChunkSeq(newest + AHEAD_CHUNKS + 1)),
            Lookup::Unknown
        );
        assert_eq!(shelf.chunk(SessionId(8), ChunkSeq(newest)), Lookup::Unknown);
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(u64::MAX)), Lookup::Unknown);
        assert_eq!(shelf.bytes(), KEEP_CHUNKS * 100);
        let index = shelf.index(Instant::now()).expect("chunks are held");
        assert_eq!((index.oldest, index.newest), (5, newest));
        assert_eq!(index.keyframes.first(), Some(&6));
    }

    #[test]
    fn bytes_are_bounded_whatever_the_chunk_size() {
        let keep_bytes = 400_000;
        let mut shelf = Shelf::keeping(KEEP_CHUNKS, keep_bytes);
        let big = keep_bytes / 4 + 1;
        for seq in 0..6 {
            shelf.store(Instant::now(), SESSION, chunk(seq, big));
        }
        assert!(shelf.bytes() <= keep_bytes, "{} bytes held", shelf.bytes());
        assert_eq!(
            shelf.index(Instant::now()).map(|i| (i.oldest, i.newest)),
            Some((3, 5))
        );
    }

    #[test]
    fn a_chunk_missed_well_behind_the_newest_is_gone_and_a_new_broadcast_clears_all() {
        let mut shelf = Shelf::default();
        for seq in [0, 1, 2, 3, 5, 6, 7, 8] {
            shelf.store(Instant::now(), SESSION, chunk(seq, 10));
        }
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(4)), Lookup::Missed);
        shelf.store(
            Instant::now(),
            SESSION,
            Signed::Init {
                mime: "video/mp4".into(),
                data: vec![1; 10],
                signature: KeySignature::from_bytes(&[0; 64]),
            },
        );
        assert!(matches!(shelf.init(SESSION), Lookup::Here(_)));
        let next = SessionId(9);
        shelf.store(Instant::now(), next, chunk(0, 10));
        assert_eq!(
            shelf.index(Instant::now()).map(|i| i.session),
            Some(next.to_string())
        );
        assert_eq!(shelf.init(SESSION), Lookup::Gone);
        assert_eq!(shelf.init(next), Lookup::NotYet);
        assert_eq!(shelf.chunk(SESSION, ChunkSeq(8)), Lookup::Gone);
        assert_eq!(shelf.bytes(), 10);
    }
}
