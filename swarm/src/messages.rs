//! What neighbours say: link set-up (buffer map and init segment) and every peer message,
//! dispatched to the part of the swarm it concerns.

use protocol::{BufferMapEntry, PeerId, PeerMessage, EDGE_AGE_UNKNOWN};

use crate::chunk_store::piece_count;
use crate::config::SwarmRole;
use crate::content::SignedInit;
use crate::hostile::DropCause;
use crate::peer::{Announced, PeerState};
use crate::piece_set::PieceSet;
use crate::substreams::substream_of;
use crate::{BytesPerSec, Millis, Swarm};

impl Swarm {
    pub(crate) fn on_connect(&mut self, now: Millis, peer: PeerId) {
        self.peers.insert(peer, PeerState::default());
        let is_source = self.config.role() == SwarmRole::Source;
        let entries = if self.serves() {
            self.store.buffer_map()
        } else {
            Vec::new()
        };
        let upload_kbps = self.config.upload_limit.map_or(u32::MAX, |limit| {
            u32::try_from(limit.kbps()).unwrap_or(u32::MAX - 1)
        });
        let edge_age_ms = self.edge_age(now, &entries);
        let map = PeerMessage::BufferMap {
            is_source,
            upload_kbps,
            edge_age_ms,
            entries,
        };
        self.send(peer, map);
        if self.serves() {
            // Whole blocks of chunks still arriving, which the buffer map leaves out.
            let block = self.config.block_pieces.max(1);
            let mut haves = Vec::new();
            for (seq, held) in &self.store.chunks {
                if held.is_complete() {
                    continue;
                }
                for first in (0..held.piece_count()).step_by(block) {
                    let end = (first + block).min(held.piece_count());
                    if held.first_missing(first..end).is_none() {
                        haves.push(held.have(*seq, first..end, false));
                    }
                }
            }
            for have in haves {
                self.send(peer, have);
            }
        }
        self.offer_init(peer);
    }

    /// How long ago the newest chunk of a buffer map was cut: the source knows; a viewer
    /// judges from its clock (late by the announcement's trip, so receivers plan a little
    /// later than they could, never earlier).
    fn edge_age(&self, now: Millis, entries: &[BufferMapEntry]) -> u16 {
        let Some(newest) = entries.iter().map(|e| e.seq).max() else {
            return EDGE_AGE_UNKNOWN;
        };
        let cut = if self.config.role() == SwarmRole::Source {
            self.produced.back().map(|(at, _)| *at)
        } else {
            self.clock.cut_at(newest)
        };
        cut.map_or(EDGE_AGE_UNKNOWN, |cut| {
            u16::try_from(now - cut).unwrap_or(EDGE_AGE_UNKNOWN - 1)
        })
    }

    pub(crate) fn on_message(&mut self, now: Millis, peer: PeerId, message: PeerMessage) {
        match message {
            PeerMessage::BufferMap {
                is_source,
                upload_kbps,
                edge_age_ms,
                entries,
            } => {
                if is_source && self.broadcaster != Some(peer) {
                    let named = self
                        .broadcaster
                        .map_or_else(|| "none".to_owned(), |b| b.to_string());
                    let reason =
                        format!("claims to be the source; the signal server names {named}");
                    self.drop_peer(peer, DropCause::Lying, reason);
                    return;
                }
                self.peer_mut(peer).is_source = is_source;
                let newest = entries.iter().map(|e| e.seq).max();
                if let Some(lie) = newest.and_then(|seq| self.implausible_announcement(peer, seq)) {
                    self.drop_peer(peer, DropCause::Lying, lie);
                    return;
                }
                let mut usable = Vec::with_capacity(entries.len());
                for entry in entries {
                    if self.announcement_usable(peer, entry.seq, entry.keyframe, entry.total) {
                        usable.push(entry);
                    } else if !self.peers.contains_key(&peer) {
                        return; // Dropped for contradicting a manifest.
                    }
                }
                let entries = usable;
                let state = self.peer_mut(peer);
                state.upload = (upload_kbps != u32::MAX)
                    .then(|| BytesPerSec::from_kbps(u64::from(upload_kbps)));
                for entry in &entries {
                    let total = entry.total as usize;
                    let announced = Announced {
                        keyframe: entry.keyframe,
                        total,
                        pieces: PieceSet::full(piece_count(total)),
                    };
                    state.has.insert(entry.seq, announced);
                }
                if let Some(newest) = entries.iter().map(|e| e.seq).max() {
                    if edge_age_ms == EDGE_AGE_UNKNOWN {
                        self.clock.observe_edge(now, newest, false);
                    } else {
                        self.clock
                            .observe_aged_edge(now, newest, u64::from(edge_age_ms));
                    }
                    self.newest_known = self.newest_known.max(Some(newest));
                }
            }
            PeerMessage::Have {
                seq,
                keyframe,
                total,
                first,
                count,
                pushed,
            } => {
                if let Some(lie) = self.implausible_announcement(peer, seq) {
                    self.drop_peer(peer, DropCause::Lying, lie);
                    return;
                }
                if !self.announcement_usable(peer, seq, keyframe, total) {
                    return;
                }
                let block = self.config.block_pieces.max(1);
                let state = self.peer_mut(peer);
                let total = total as usize;
                let announced = state.has.entry(seq).or_insert_with(|| Announced {
                    keyframe,
                    total,
                    pieces: PieceSet::empty(piece_count(total)),
                });
                let (first, count) = (usize::from(first), usize::from(count));
                // Blocks whose start this neighbour announces for the first time.
                let fresh: Vec<usize> = (first.div_ceil(block) * block..first + count)
                    .step_by(block)
                    .filter(|&i| !announced.pieces.contains_all(i..i + 1))
                    .map(|i| i / block)
                    .collect();
                announced.pieces.insert(first..first + count);
                let is_source = state.is_source;
                let substreams = self.parents.count();
                let blocks = first / block..(first + count).div_ceil(block);
                let from_parent = !blocks.is_empty()
                    && blocks
                        .clone()
                        .all(|b| self.parents.pushes(peer, substream_of(substreams, seq, b)));
                if pushed && is_source {
                    for b in blocks {
                        self.parents
                            .fed_by_source(substream_of(substreams, seq, b), now);
                    }
                }
                if pushed && (is_source || from_parent) {
                    self.expect_push(now, peer, seq, first..first + count);
                }
                self.note_announcement(now, peer, seq, &fresh);
                self.drop_pushes_held(peer, seq, first, first + count);
                if self.newest_known.is_none_or(|newest| seq > newest) {
                    self.clock.observe_edge(now, seq, true);
                    self.newest_known = Some(seq);
                }
            }
            PeerMessage::Request {
                req,
                seq,
                first,
                count,
                deadline_ms,
            } => self.on_request(now, peer, req, seq, first, count, deadline_ms),
            PeerMessage::Piece {
                req,
                seq,
                offset,
                total,
                data,
            } => self.on_piece(now, peer, req, seq, offset, total, data),
            PeerMessage::Absent { req, seq } => self.on_absent(now, peer, req, seq),
            PeerMessage::Cancel { req } => {
                self.peer_mut(peer).serving.retain(|job| job.req != req);
            }
            PeerMessage::Init {
                mime,
                data,
                signature,
            } => self.on_init(
                peer,
                SignedInit {
                    mime,
                    data,
                    signature,
                },
            ),
            PeerMessage::Manifest(manifest) => self.on_manifest(now, peer, manifest),
            // The node checks versions before a link reaches the swarm.
            PeerMessage::Hello { .. } => {}
            PeerMessage::Subscribe { count, mask } => self.on_subscribe(peer, count, mask),
            PeerMessage::Subscribed { count, mask } => self.on_subscribed(now, peer, count, mask),
        }
    }
}
