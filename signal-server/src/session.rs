//! One connection's place in its channel, and what each signalling message does to it:
//! joining (a broadcaster through the key challenge), relaying set-up, leaving.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::Either;

use protocol::{
    ChannelName, ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SessionId,
    MIN_SIGNAL_VERSION,
};
use tokio::time::Instant;

use crate::claims::{self, PendingClaim};
use crate::connection::{Close, CLOSE_POLICY};
use crate::mailbox::Mailbox;
use crate::metrics::Rejection;
use crate::rooms::Route;
use crate::viewer_reports::ReportGate;
use crate::AppState;

/// What one connection is in the channel.
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub peer: Option<PeerId>,
    /// A broadcaster's join waiting for its signature. Boxed: few connections ever have
    /// one, and every idle connection would carry its room inline.
    pub claim: Option<Box<PendingClaim>>,
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

/// Sleeps until `deadline`, or forever without one. The timer is boxed: most connections
/// have no deadline, and should not carry a timer's room in their future.
pub(crate) fn until(deadline: Option<Instant>) -> impl Future<Output = ()> {
    match deadline {
        Some(deadline) => Either::Left(Box::pin(tokio::time::sleep_until(deadline))),
        None => Either::Right(std::future::pending()),
    }
}

/// Handles one message; returns a close when the client must go.
pub(crate) async fn handle(
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
                // Another server may have recorded the channel's owner.
                if let Some(cluster) = &state.cluster {
                    if let Some(Some(owner)) = cluster.owner(&channel).await {
                        state.owners().remember(channel.clone(), owner);
                    }
                }
                match claims::challenge(state, mailbox, channel, key, broadcast) {
                    Ok(claim) => session.claim = Some(Box::new(claim)),
                    Err(refusal) => return refuse(state, mailbox, refusal),
                }
                return None;
            }
            enter(state, mailbox, session, channel, role, None).await;
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
            match may_broadcast(state, &claim).await {
                Ownership::Yours => {}
                Ownership::Another => {
                    return refuse(state, mailbox, claims::owned_by_another(&claim.channel))
                }
                Ownership::Unknown => {
                    state.metrics.reject(Rejection::Unavailable);
                    reply_error(
                        mailbox,
                        ErrorCode::Unavailable,
                        format!(
                            "who owns {} is recorded in Redis, which does not answer: try again shortly",
                            claim.channel
                        ),
                    );
                    return None;
                }
            }
            if enter(
                state,
                mailbox,
                session,
                claim.channel.clone(),
                Role::Broadcaster,
                Some(claim.session),
            )
            .await
            {
                let broadcaster = session.peer.expect("enter() set the peer id");
                let claimed = ServerMessage::Claimed {
                    channel_key: claim.key,
                    broadcaster,
                    session: claim.session,
                };
                state
                    .rooms()
                    .tell_channel(&claim.channel, broadcaster, &claimed);
                if let Some(cluster) = &state.cluster {
                    cluster.tell_channel(&claim.channel, broadcaster, &claimed);
                }
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
            let routed = state.rooms().relay_routed(from, to, signal);
            match routed {
                Ok(Route::Delivered) => {
                    state.metrics.relayed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Route::Remote(server, channel, signal)) => {
                    let passed = state
                        .cluster
                        .as_ref()
                        .is_some_and(|c| c.relay(server, from, to, channel, signal));
                    if passed {
                        state.metrics.relayed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        state.metrics.reject(Rejection::UnknownPeer);
                        reply_error(
                            mailbox,
                            ErrorCode::UnknownPeer,
                            format!("peer {to} is on a signal server that is not answering"),
                        );
                    }
                }
                Err(e) => {
                    state.metrics.reject(e.rejection);
                    reply_error(mailbox, e.code, e.message);
                }
            }
        }
        ClientMessage::Status { free_slots } => {
            if let Some(id) = session.peer {
                let changed = state.rooms().set_free_slots(id, free_slots);
                if let (Some(cluster), Some((channel, open))) = (&state.cluster, changed) {
                    let (broadcaster, broadcast) = state.rooms().broadcast(&channel);
                    let broadcast = (broadcaster == Some(id)).then_some(broadcast);
                    cluster.status(id, channel, open, broadcast);
                }
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
            let member = state.rooms().member(id);
            let view = match (&state.cluster, member) {
                (Some(cluster), Some((channel, _))) => {
                    cluster.view(&channel, state.config.introduce).await
                }
                _ => None,
            };
            let found = state
                .rooms()
                .more_peers_from(id, view.as_ref().map(|v| &v.candidates));
            if let Some(cluster) = &state.cluster {
                cluster.introduced(&found);
            }
            mailbox.post(&ServerMessage::Introduce {
                peers: found.introduced,
            });
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
                leave(state, id);
            }
        }
    }
    None
}

/// Takes the peer out of its channel, here and on the servers sharing it.
pub(crate) fn leave(state: &AppState, peer: PeerId) {
    let left = state.rooms().leave_routed(peer);
    if let (Some(cluster), Some(left)) = (&state.cluster, left) {
        cluster.left(&left);
    }
}

/// Whether a claim's key may broadcast.
enum Ownership {
    Yours,
    Another,
    /// Servers share channels, Redis does not answer and this server has no record of
    /// the channel: granting it could give it to two keys.
    Unknown,
}

/// Whether the claim's key may broadcast: across servers, the key Redis records as the
/// owner (set atomically, so of two keys claiming at once exactly one wins), or while
/// Redis does not answer, an owner this server knows; alone, this server's record.
async fn may_broadcast(state: &AppState, claim: &PendingClaim) -> Ownership {
    let known = |state: &AppState| {
        if state.owners().may_broadcast(&claim.channel, &claim.key) {
            Ownership::Yours
        } else {
            Ownership::Another
        }
    };
    let Some(cluster) = &state.cluster else {
        return known(state);
    };
    match cluster.claim(&claim.channel, &claim.key).await {
        Some(Ok(())) => Ownership::Yours,
        Some(Err(owner)) => {
            if let Some(owner) = owner {
                state.owners().remember(claim.channel.clone(), owner);
            }
            Ownership::Another
        }
        None if state.owners().key(&claim.channel).is_some() => known(state),
        None => Ownership::Unknown,
    }
}

/// Joins the room; answers `Welcome` (with the channel's key) and `Introduce`. Returns
/// whether it joined.
async fn enter(
    state: &AppState,
    mailbox: &Mailbox,
    session: &mut Session,
    channel: ChannelName,
    role: Role,
    broadcast: Option<SessionId>,
) -> bool {
    let view = match &state.cluster {
        Some(cluster) => cluster.view(&channel, state.config.introduce).await,
        None => None,
    };
    if let Some(owner) = view.as_ref().and_then(|v| v.owner) {
        state.owners().remember(channel.clone(), owner);
    }
    let joined = state.rooms().join_from(
        channel.clone(),
        role,
        mailbox.clone(),
        broadcast,
        view.as_ref().map(|v| &v.candidates),
    );
    match joined {
        Ok(joined) => {
            if let Some(cluster) = &state.cluster {
                cluster.joined(&joined, &channel, role, broadcast, view.as_ref());
            }
            let id = joined.peer;
            tracing::info!(peer = %id, %channel, ?role, introduced = joined.introduced.len(), "peer joined");
            session.peer = Some(id);
            session.reports = (role == Role::Viewer).then(|| ReportGate::new(Instant::now()));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let ice_servers = crate::ice::ice_servers(&state.config, id, now);
            let channel_key = state.owners().key(&channel);
            // A broadcaster here is known here first; one on another server from Redis.
            let (broadcaster, broadcast) = match state.rooms().broadcast(&channel) {
                (None, _) => view.as_ref().map_or((None, None), |v| {
                    (v.candidates.broadcaster.map(|(c, _)| c.peer), v.session)
                }),
                here => here,
            };
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
            mailbox.post(&ServerMessage::Introduce {
                peers: joined.introduced,
            });
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
