//! One connection's place in its channel, and what each signalling message does to it:
//! joining (a broadcaster through the key challenge), relaying set-up, leaving.

use std::sync::atomic::Ordering;
use std::time::Duration;

use protocol::{
    ChannelName, ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SessionId,
    MIN_SIGNAL_VERSION,
};
use tokio::time::Instant;

use crate::claims::{self, PendingClaim};
use crate::connection::{Close, CLOSE_POLICY};
use crate::metrics::Rejection;
use crate::rooms::Mailbox;
use crate::viewer_reports::ReportGate;
use crate::AppState;

/// What one connection is in the channel.
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub peer: Option<PeerId>,
    /// A broadcaster's join waiting for its signature.
    pub claim: Option<PendingClaim>,
    /// A joined viewer's experience reports; broadcasters report none.
    pub reports: Option<ReportGate>,
    /// When this connection last got peers for `more_peers`.
    pub more_peers_at: Option<Instant>,
    /// When this connection last joined a channel.
    pub joined_at: Option<Instant>,
}

/// A connection gets more peers at most this often. Each answer introduces viewers it has
/// not met, so without a limit one client could meet, and learn the address of, every
/// viewer of a channel in minutes. Honest peers ask at most every 10 s
/// (`swarm::neighbours`), so they never meet the limit.
pub(crate) const MORE_PEERS_EVERY: Duration = Duration::from_secs(5);

/// A connection joins at most this often. Every join introduces a fresh set of peers, so
/// leaving and joining again would otherwise bypass [`MORE_PEERS_EVERY`]. The drivers
/// open a new connection for another channel, so no honest client meets this; a client
/// flipping channels on one connection is slowed, not refused for good.
pub(crate) const JOIN_EVERY: Duration = Duration::from_secs(5);

/// Whether something done at most `every` may be done now; if so, `last` becomes now,
/// else the client is told when to try (`what` and `again` name it in the message).
fn paced(
    state: &AppState,
    mailbox: &Mailbox,
    last: &mut Option<Instant>,
    every: Duration,
    (what, again): (&str, &str),
) -> bool {
    let now = Instant::now();
    let wait = last.map_or(Duration::ZERO, |at| {
        (at + every).saturating_duration_since(now)
    });
    if wait.is_zero() {
        *last = Some(now);
        return true;
    }
    let message = format!(
        "{what} at most every {} s; {again} in {} ms",
        every.as_secs(),
        wait.as_millis()
    );
    state.metrics.reject(Rejection::RateLimited);
    reply_error(mailbox, ErrorCode::RateLimited, message);
    false
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Handles one message; returns a close when the client must go.
pub(crate) fn handle(
    state: &AppState,
    mailbox: &Mailbox,
    session: &mut Session,
    message: ClientMessage,
) -> Option<Close> {
    if session.claim.is_some() && !matches!(message, ClientMessage::Prove { .. }) {
        reply_error(
            mailbox,
            ErrorCode::NotChallenged,
            "answer the challenge (prove) before anything else".into(),
        );
        return None;
    }
    match message {
        ClientMessage::Join {
            channel,
            role,
            key,
            session: broadcast,
            version,
        } => {
            if version < MIN_SIGNAL_VERSION {
                state.metrics.reject(Rejection::Outdated);
                reply_error(
                    mailbox,
                    ErrorCode::UpgradeRequired,
                    format!(
                        "this client speaks version {version}; the server needs {MIN_SIGNAL_VERSION} \
                         or later: reload to update"
                    ),
                );
                return None;
            }
            if session.peer.is_some() {
                reply_error(
                    mailbox,
                    ErrorCode::AlreadyJoined,
                    "this connection already joined a channel".into(),
                );
                return None;
            }
            // Counted when asked, whatever the answer: a refused join is a fresh
            // introduction tried all the same.
            let pace = ("a connection joins", "join again");
            if !paced(state, mailbox, &mut session.joined_at, JOIN_EVERY, pace) {
                return None;
            }
            if role == Role::Broadcaster {
                match claims::challenge(state, mailbox, channel, key, broadcast) {
                    Ok(claim) => session.claim = Some(claim),
                    Err(refusal) => return refuse(state, mailbox, refusal),
                }
                return None;
            }
            enter(state, mailbox, session, channel, role, None);
        }
        ClientMessage::Prove { signature } => {
            let Some(claim) = session.claim.take() else {
                reply_error(
                    mailbox,
                    ErrorCode::NotChallenged,
                    "no challenge is pending: join as a broadcaster first".into(),
                );
                return None;
            };
            if let Err(refusal) = claims::verify(&claim, &signature) {
                return refuse(state, mailbox, refusal);
            }
            // Another key may have claimed the channel while this one was signing.
            if !state.owners().may_broadcast(&claim.channel, &claim.key) {
                return refuse(state, mailbox, claims::owned_by_another(&claim.channel));
            }
            if enter(
                state,
                mailbox,
                session,
                claim.channel.clone(),
                Role::Broadcaster,
                Some(claim.session),
            ) {
                let broadcaster = session.peer.expect("enter() set the peer id");
                let claimed = ServerMessage::Claimed {
                    channel_key: claim.key,
                    broadcaster,
                    session: claim.session,
                };
                state
                    .rooms()
                    .tell_channel(&claim.channel, broadcaster, &claimed);
                if let Err(e) = state.owners().claim(claim.channel, claim.key) {
                    tracing::warn!(error = %e, "channel claim not persisted");
                }
            }
        }
        ClientMessage::Signal { to, signal } => {
            let Some(from) = session.peer else {
                reply_error(mailbox, ErrorCode::NotJoined, "join a channel first".into());
                return None;
            };
            match state.rooms().relay(from, to, signal) {
                Ok(()) => {
                    state.metrics.relayed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    state.metrics.reject(e.rejection);
                    reply_error(mailbox, e.code, e.message);
                }
            }
        }
        ClientMessage::Status { free_slots } => {
            if let Some(id) = session.peer {
                state.rooms().set_free_slots(id, free_slots);
            }
        }
        ClientMessage::MorePeers {} => {
            let Some(id) = session.peer else {
                reply_error(mailbox, ErrorCode::NotJoined, "join a channel first".into());
                return None;
            };
            let pace = ("more peers", "ask again");
            if !paced(
                state,
                mailbox,
                &mut session.more_peers_at,
                MORE_PEERS_EVERY,
                pace,
            ) {
                return None;
            }
            let peers = state.rooms().more_peers(id);
            mailbox.post(&ServerMessage::Introduce { peers });
        }
        ClientMessage::Report(report) => {
            let admitted = match (session.peer, &mut session.reports) {
                (Some(peer), Some(gate)) => gate
                    .admit(Instant::now(), &report, &state.config.report_policy())
                    .map(|()| peer),
                (Some(_), None) => Err("only viewers report their experience".into()),
                (None, _) => Err("join a channel as a viewer first".into()),
            };
            match admitted {
                Ok(peer) => state.rooms().record_report(peer, &report),
                Err(why) => {
                    state.metrics.reject(Rejection::BadReport);
                    reply_error(mailbox, ErrorCode::BadReport, why);
                }
            }
        }
        ClientMessage::Leave {} => {
            session.reports = None;
            if let Some(id) = session.peer.take() {
                state.rooms().leave(id);
            }
        }
    }
    None
}

/// Joins the room; answers `Welcome` (with the channel's key) and `Introduce`. Returns
/// whether it joined.
fn enter(
    state: &AppState,
    mailbox: &Mailbox,
    session: &mut Session,
    channel: ChannelName,
    role: Role,
    broadcast: Option<SessionId>,
) -> bool {
    let joined = state
        .rooms()
        .join(channel.clone(), role, mailbox.clone(), broadcast);
    match joined {
        Ok((id, introduced)) => {
            tracing::info!(peer = %id, %channel, ?role, introduced = introduced.len(), "peer joined");
            session.peer = Some(id);
            session.reports = (role == Role::Viewer).then(|| ReportGate::new(Instant::now()));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let ice_servers = crate::ice::ice_servers(&state.config, id, now);
            let channel_key = state.owners().key(&channel);
            let (broadcaster, broadcast) = state.rooms().broadcast(&channel);
            mailbox.post(&ServerMessage::Welcome {
                peer_id: id,
                channel,
                channel_key,
                broadcaster,
                session: broadcast,
                ice_servers,
                report_every_ms: session
                    .reports
                    .and_then(|_| state.config.report_policy().every_ms()),
                edges: match role {
                    Role::Viewer => state.config.edges.clone(),
                    Role::Broadcaster => Vec::new(),
                },
            });
            mailbox.post(&ServerMessage::Introduce { peers: introduced });
            true
        }
        Err(e) => {
            state.metrics.reject(e.rejection);
            reply_error(mailbox, e.code, e.message);
            false
        }
    }
}

fn refuse(state: &AppState, mailbox: &Mailbox, refusal: claims::Refusal) -> Option<Close> {
    state.metrics.reject(refusal.rejection);
    reply_error(mailbox, refusal.code, refusal.message);
    refusal.close.then(|| Close {
        code: CLOSE_POLICY,
        reason: "channel claim refused".into(),
    })
}

pub(crate) fn reply_error(mailbox: &Mailbox, code: ErrorCode, message: String) {
    mailbox.post(&ServerMessage::Error { code, message });
}
