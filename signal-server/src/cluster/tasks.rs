//! The cluster's three tasks: the writer (every write and note, in order, on one
//! connection), the heartbeat (liveness, reconnecting, the presence refresh, servers
//! gone) and the inbox (notes from other servers, applied to this server's rooms).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use protocol::{ErrorCode, ServerMessage};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;

use super::notes::{keys, Envelope, Note};
use super::{
    listed_as, unix_ms, Cluster, ServerId, Write, COMMAND_TIMEOUT, GONE_AFTER, HEARTBEAT,
    HEARTBEAT_TIMEOUT, PEER_TTL, REFRESH, SERVER_TTL,
};
use crate::rooms::Contact;

/// Writes carried out in one pipeline at most.
const BATCH: usize = 512;
/// Peers per `ZADD` in the presence refresh.
const REFRESH_CHUNK: usize = 1000;
/// Channel keys outlive their last refresh by this much, so an abandoned channel's
/// sets vanish by themselves.
const KEY_TTL_MS: u64 = 2 * PEER_TTL.as_millis() as u64;

pub(super) fn spawn(cluster: Arc<Cluster>, queue: mpsc::Receiver<Write>, beat: Heartbeat) {
    tokio::spawn(writer(cluster.clone(), queue));
    tokio::spawn(heartbeat(cluster.clone(), beat));
    tokio::spawn(inbox(cluster));
}

async fn writer(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(mut con) = cluster.connection() else {
            let dropped = batch.len() as u64;
            cluster
                .counters
                .writes_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        let now = unix_ms();
        let writes = batch.len() as u64;
        // Signals whose PUBLISH answers how many servers read it, in order.
        let mut bounces = Vec::new();
        for write in batch.drain(..) {
            add_write(&mut pipe, cluster.me, write, now, &mut bounces);
        }
        let readers: Option<Vec<u64>> = cluster.query(pipe.query_async(&mut con)).await;
        let Some(readers) = readers else {
            tracing::debug!("a batch of cluster writes was lost with Redis");
            cluster
                .counters
                .writes_dropped
                .fetch_add(writes, Ordering::Relaxed);
            continue;
        };
        // Nobody reads that inbox: its server died (its connections closed with it),
        // though it has not expired from the list yet.
        let mut rooms = cluster.rooms();
        for ((from, to), _) in bounces.iter().zip(readers).filter(|(_, n)| *n == 0) {
            let message = ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                message: format!("peer {to} is on a signal server that is gone"),
            };
            rooms.remote_gone(*from, *to, &message);
        }
    }
}

fn add_write(
    pipe: &mut redis::Pipeline,
    me: ServerId,
    write: Write,
    now: u64,
    bounces: &mut Vec<(protocol::PeerId, protocol::PeerId)>,
) {
    let expiry = now + PEER_TTL.as_millis() as u64;
    match write {
        Write::Publish { to, text, bounce } => {
            let channel = to.map_or_else(|| keys::ALL.to_owned(), keys::inbox);
            pipe.cmd("PUBLISH").arg(channel).arg(text);
            match bounce {
                Some(pair) => bounces.push(pair),
                None => {
                    pipe.ignore();
                }
            }
        }
        Write::Present {
            channel,
            peer,
            open,
        } => {
            let entry = listed_as(me, peer);
            pipe.cmd("ZADD")
                .arg(keys::peers(&channel))
                .arg(expiry)
                .arg(&entry)
                .ignore();
            if open {
                pipe.cmd("ZADD")
                    .arg(keys::open(&channel))
                    .arg(expiry)
                    .arg(&entry)
                    .ignore();
            } else {
                pipe.cmd("ZREM")
                    .arg(keys::open(&channel))
                    .arg(&entry)
                    .ignore();
            }
            for key in [keys::peers(&channel), keys::open(&channel)] {
                pipe.cmd("PEXPIRE").arg(key).arg(KEY_TTL_MS).ignore();
            }
        }
        Write::Absent { channel, peer } => {
            let entry = listed_as(me, peer);
            for key in [keys::peers(&channel), keys::open(&channel)] {
                pipe.cmd("ZREM").arg(key).arg(&entry).ignore();
            }
        }
        Write::Broadcaster {
            channel,
            peer,
            session,
            open,
        } => add_broadcaster(pipe, me, &channel, peer, session, open),
        Write::BroadcasterGone { channel, peer } => {
            // Only if it still names this peer: a newer session elsewhere stays.
            pipe.cmd("EVAL")
                .arg(
                    "if redis.call('HGET', KEYS[1], 'peer') == ARGV[1] then \
                     redis.call('DEL', KEYS[1]); redis.call('SREM', KEYS[2], ARGV[2]) end \
                     return 0",
                )
                .arg(2)
                .arg(keys::broadcaster(&channel))
                .arg(keys::LIVE)
                .arg(format!("{:016x}", peer.0))
                .arg(channel.as_str())
                .ignore();
        }
    }
}

fn add_broadcaster(
    pipe: &mut redis::Pipeline,
    me: ServerId,
    channel: &protocol::ChannelName,
    peer: protocol::PeerId,
    session: Option<protocol::SessionId>,
    open: bool,
) {
    let key = keys::broadcaster(channel);
    pipe.cmd("HSET")
        .arg(&key)
        .arg("peer")
        .arg(format!("{:016x}", peer.0))
        .arg("server")
        .arg(me.to_string())
        .arg("open")
        .arg(if open { "1" } else { "0" })
        .ignore();
    match session {
        Some(session) => pipe
            .cmd("HSET")
            .arg(&key)
            .arg("session")
            .arg(session.to_string())
            .ignore(),
        None => pipe.cmd("HDEL").arg(&key).arg("session").ignore(),
    };
    pipe.cmd("PEXPIRE")
        .arg(&key)
        .arg(PEER_TTL.as_millis() as u64)
        .ignore();
    pipe.cmd("SADD")
        .arg(keys::LIVE)
        .arg(channel.as_str())
        .ignore();
}

/// The heartbeat's memory: when it last listed everything, and when it last saw each
/// server listed.
pub(super) struct Heartbeat {
    last_refresh: Option<Instant>,
    seen: HashMap<ServerId, Instant>,
    /// When Redis last came back after an outage, and the servers listed before it: for
    /// `GONE_AFTER` from then, the list is still filling up again (after a Redis restart
    /// each server registers at its own next beat), so those count as alive meanwhile.
    back: Option<(Instant, std::collections::HashSet<ServerId>)>,
}

/// One heartbeat before the server starts serving, so that a server whose Redis answers
/// is shared from its first peer.
pub(super) async fn first_heartbeat(cluster: &Cluster) -> Heartbeat {
    let mut heartbeat = Heartbeat {
        last_refresh: None,
        seen: HashMap::new(),
        back: None,
    };
    heartbeat.beat(cluster).await;
    heartbeat
}

/// Every second: reconnect if needed, say this server is alive and read who else is;
/// every few seconds (and at once after Redis was away) list all this server's peers
/// again; tell this server's peers when a server they have contacts on is gone.
async fn heartbeat(cluster: Arc<Cluster>, mut heartbeat: Heartbeat) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        heartbeat.beat(&cluster).await;
    }
}

impl Heartbeat {
    async fn beat(&mut self, cluster: &Cluster) {
        let Some(mut con) = connected(cluster).await else {
            return;
        };
        let now = unix_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(keys::SERVERS)
            .arg(now + SERVER_TTL.as_millis() as u64)
            .arg(cluster.me.to_string())
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(keys::SERVERS)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("ZRANGE").arg(keys::SERVERS).arg(0).arg(-1);
        let Some((servers,)) = cluster
            .beat_query::<(Vec<String>,)>(pipe.query_async(&mut con))
            .await
        else {
            return;
        };
        let was_down = cluster.set_up();
        let mut listed: std::collections::HashSet<ServerId> = servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .chain([cluster.me])
            .collect();
        let at = Instant::now();
        if was_down {
            self.back = Some((at, cluster.listed()));
            // Absence counts only while Redis answers: after an outage (or a Redis
            // restart, when servers register again one by one) every server starts anew.
            for last in self.seen.values_mut() {
                *last = at;
            }
        }
        for server in &listed {
            self.seen.insert(*server, at);
        }
        let gone: Vec<ServerId> = self
            .seen
            .iter()
            .filter(|(_, last)| at.duration_since(**last) >= GONE_AFTER)
            .map(|(s, _)| *s)
            .collect();
        for server in gone {
            self.seen.remove(&server);
            tracing::info!(%server, "a signal server sharing channels is gone");
            cluster.rooms().server_gone(server);
            cluster
                .counters
                .servers_gone
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some((back, before)) = &self.back {
            if at.duration_since(*back) < GONE_AFTER {
                listed.extend(before.iter().filter(|s| self.seen.contains_key(s)));
            }
        }
        cluster.set_listed(listed);
        if (was_down || self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH))
            && refresh(cluster, &mut con).await
        {
            self.last_refresh = Some(Instant::now());
        }
    }
}

/// The connection, opened again if Redis was away.
async fn connected(cluster: &Cluster) -> Option<MultiplexedConnection> {
    if let Some(con) = cluster.connection() {
        return Some(con);
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(HEARTBEAT_TIMEOUT));
    match cluster
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(con) => {
            *cluster
                .connection
                .lock()
                .expect("connection lock is never poisoned") = Some(con.clone());
            Some(con)
        }
        Err(e) => {
            cluster.set_down(e.to_string());
            None
        }
    }
}

/// Lists every peer of this server again, with fresh expiries, and drops expired ones.
/// Whether Redis took it: one not taken is tried again at the next beat.
async fn refresh(cluster: &Cluster, con: &mut MultiplexedConnection) -> bool {
    let presence = cluster.rooms().presence();
    if presence.is_empty() {
        return true;
    }
    let now = unix_ms();
    let expiry = now + PEER_TTL.as_millis() as u64;
    let mut pipe = redis::pipe();
    for channel in &presence {
        let (peers, open) = (keys::peers(&channel.channel), keys::open(&channel.channel));
        for key in [&peers, &open] {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(now)
                .ignore();
        }
        for members in channel.members.chunks(REFRESH_CHUNK) {
            let zadd = pipe.cmd("ZADD").arg(&peers);
            for (peer, _) in members {
                zadd.arg(expiry).arg(listed_as(cluster.me, *peer));
            }
            zadd.ignore();
            let open_ones: Vec<_> = members.iter().filter(|(_, open)| *open).collect();
            if !open_ones.is_empty() {
                let zadd = pipe.cmd("ZADD").arg(&open);
                for (peer, _) in &open_ones {
                    zadd.arg(expiry).arg(listed_as(cluster.me, *peer));
                }
                zadd.ignore();
            }
            let full: Vec<_> = members.iter().filter(|(_, open)| !*open).collect();
            if !full.is_empty() {
                let zrem = pipe.cmd("ZREM").arg(&open);
                for (peer, _) in &full {
                    zrem.arg(listed_as(cluster.me, *peer));
                }
                zrem.ignore();
            }
        }
        for key in [&peers, &open] {
            pipe.cmd("PEXPIRE").arg(key).arg(KEY_TTL_MS).ignore();
        }
        if let Some((peer, session)) = channel.broadcaster {
            // Ownership is durable in Redis, but a Redis that lost it (restarted without
            // persistence) gets it back from the server holding the broadcast; NX: never
            // over another key's claim.
            let owner = cluster
                .owners
                .lock()
                .expect("owners lock is never poisoned")
                .key(&channel.channel);
            if let Some(owner) = owner {
                pipe.cmd("SET")
                    .arg(keys::owner(&channel.channel))
                    .arg(owner.to_string())
                    .arg("NX")
                    .ignore();
            }
            let open = channel.members.iter().any(|(p, open)| *p == peer && *open);
            add_broadcaster(&mut pipe, cluster.me, &channel.channel, peer, session, open);
        }
    }
    // The biggest request a server makes: it has the heartbeat's allowance, and a late
    // answer is tried again rather than taken for Redis down.
    let done: Option<()> = cluster.slow_query(pipe.query_async(con)).await;
    if done.is_some() {
        tracing::debug!(channels = presence.len(), "presence refreshed");
    }
    done.is_some()
}

/// Reads this server's inbox and the channel every server reads, applying each note to
/// this server's rooms; subscribes again whenever the subscription is lost.
async fn inbox(cluster: Arc<Cluster>) {
    let inbox = keys::inbox(cluster.me);
    loop {
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let mut pubsub = cluster.client.get_async_pubsub().await?;
            pubsub.subscribe(&inbox).await?;
            pubsub.subscribe(keys::ALL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(mut pubsub)) => {
                tracing::debug!(%inbox, "reading notes from other servers");
                cluster.set_subscribed(true);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(text) => apply(&cluster, &text),
                        Err(e) => tracing::debug!(error = %e, "a note that is not text"),
                    }
                }
                cluster.set_subscribed(false);
                cluster.set_down("the subscription to other servers' notes ended".into());
            }
            Ok(Err(e)) => cluster.set_down(e.to_string()),
            Err(_) => cluster.set_down("subscribing timed out".into()),
        }
        tokio::time::sleep(HEARTBEAT / 2).await;
    }
}

/// One note from another server.
fn apply(cluster: &Cluster, text: &str) {
    let envelope = match Envelope::decode(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            cluster
                .counters
                .notes_unread
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "a note this server cannot read (a newer server's?)");
            return;
        }
    };
    if envelope.server == cluster.me {
        return;
    }
    cluster.counters.notes_in.fetch_add(1, Ordering::Relaxed);
    let from_server = envelope.server;
    match envelope.note {
        Note::Contact { peer, other } => cluster.rooms().add_remote_contact(
            peer,
            Contact {
                peer: other,
                server: from_server,
            },
        ),
        Note::Signal {
            from,
            to,
            channel,
            signal,
        } => {
            let sender = Contact {
                peer: from,
                server: from_server,
            };
            let delivered = cluster
                .rooms()
                .deliver_remote_signal(sender, to, &channel, signal);
            if !delivered {
                cluster.publish(Some(from_server), Note::Unknown { to: from, peer: to });
            }
        }
        Note::Unknown { to, peer } => {
            let message = ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                message: format!("peer {peer} has left"),
            };
            cluster.rooms().remote_gone(to, peer, &message);
        }
        Note::Left { peer, to } => {
            let message = ServerMessage::PeerLeft { peer };
            let mut rooms = cluster.rooms();
            for local in to {
                rooms.remote_gone(local, peer, &message);
            }
        }
        Note::Channel {
            channel,
            except,
            message,
        } => cluster.rooms().tell_channel(&channel, except, &message),
        Note::Replace { peer } => {
            let left = cluster.rooms().replaced_elsewhere(peer);
            if let Some(left) = left {
                cluster.left(&left);
            }
        }
    }
}
