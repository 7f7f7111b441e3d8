//! Several signal servers sharing channels through Redis (`--redis URL`).
//!
//! Each server keeps its own peers' connections in its `Rooms`, exactly as a server alone;
//! Redis holds what the other servers need of them, as soft state that expires unless
//! refreshed (`notes::keys`): which servers are alive, each channel's peers (and those
//! with free slots) as `PEER@SERVER`, the broadcaster, the live channels; only channel
//! ownership is durable. Servers reach each other's peers through pub/sub: one inbox per
//! server for relayed signals, new contacts and leaves, and one channel every server reads
//! for a broadcaster's `claimed`. Every note a server publishes goes out from one task on
//! one connection, so notes from one server arrive in the order they were written: a
//! contact before the signal that needs it, signals of one pair in order.
//!
//! While Redis does not answer, a server serves its own peers alone (introductions from
//! its own rooms, its cached owners), says so in `/healthz` and the log, and re-registers
//! everything once Redis is back.

mod notes;
mod tasks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::{
    ChannelKey, ChannelName, ChannelSummary, PeerId, Role, ServerMessage, SessionId, SignalPayload,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

pub use notes::ServerId;

use crate::owners::Owners;
use crate::rooms::{Candidates, Contact, Joined, Left, Rooms};
use notes::{keys, member, parse_member, Envelope, Note};

/// How often a server says it is alive, and reads who else is.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A server that has not said so for this long no longer counts as alive: its peers are
/// no longer introduced, and signals to them are refused at once.
const SERVER_TTL: Duration = Duration::from_secs(5);
/// A server missing from the list for this long (in a row, while Redis answers) is gone:
/// its peers' contacts here hear that they left. Longer than a heartbeat after a Redis
/// restart, when each server registers again within a second or two.
const GONE_AFTER: Duration = Duration::from_secs(3);
/// How often each server lists all its peers again.
const REFRESH: Duration = Duration::from_secs(5);
/// A peer not listed again within this long drops out of its channel's sets.
const PEER_TTL: Duration = Duration::from_secs(15);
/// A Redis command that takes longer than this is given up (a join is then introduced to
/// this server's peers only); it does not mean Redis is down.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// A heartbeat unanswered this long means Redis is down. Longer than a command's time-out:
/// on a busy machine (a burst of joins, tens of thousands of relays a second) Redis and
/// this server answer late without being away, and each false "down" drops the
/// connection with every write in flight; under load, a 1 s limit flapped several times
/// a minute (scripts/bench-cluster). Within `SERVER_TTL`, so the others still count
/// this server alive meanwhile.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Writes waiting for Redis; past this, new ones are dropped (counted): presence is
/// repaired by the next refresh, and a signal that cannot go is refused to its sender.
const WRITE_QUEUE: usize = 65_536;
/// Candidates read per wanted introduction, so that some survive the filters (gone, met).
const CANDIDATES_PER_PEER: usize = 2;

/// This server's part in a group of servers sharing channels.
pub(crate) struct Cluster {
    pub me: ServerId,
    client: redis::Client,
    rooms: Arc<Mutex<Rooms>>,
    /// Owners this server knows, re-asserted for its own broadcasts after a Redis
    /// restart that lost them.
    owners: Arc<Mutex<Owners>>,
    /// Open while Redis answers.
    connection: Mutex<Option<MultiplexedConnection>>,
    writes: mpsc::Sender<Write>,
    /// Which servers are alive, as of the last heartbeat.
    servers: Mutex<Servers>,
    health: Mutex<Health>,
    pub counters: Counters,
}

/// Cluster traffic, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub notes_out: AtomicU64,
    pub notes_in: AtomicU64,
    /// Writes dropped: Redis down or the queue full.
    pub writes_dropped: AtomicU64,
    /// Notes that could not be read (broken, or a newer server's kind).
    pub notes_unread: AtomicU64,
    /// Other servers found gone (no heartbeat for `SERVER_TTL + GONE_AFTER`).
    pub servers_gone: AtomicU64,
    /// Requests given up after their time-out while Redis still counted as up.
    pub slow_answers: AtomicU64,
}

/// Servers listed in Redis at the last heartbeat (this one included), and every server
/// ever listed. One never listed yet is taken to be alive: it started since (its peers'
/// entries are fresh); one listed once and not now is not.
#[derive(Debug)]
struct Servers {
    listed: HashSet<ServerId>,
    known: HashSet<ServerId>,
}

impl Servers {
    fn alive(&self, server: ServerId) -> bool {
        self.listed.contains(&server) || !self.known.contains(&server)
    }
}

#[derive(Debug)]
struct Health {
    up: bool,
    /// Reading this server's inbox (a separate connection).
    subscribed: bool,
    since: SystemTime,
    error: Option<String>,
}

/// What Redis says of a channel at a join or a `more_peers`.
pub(crate) struct View {
    pub candidates: Candidates,
    pub session: Option<SessionId>,
    pub owner: Option<ChannelKey>,
}

/// One write to Redis, carried out in order by the writer task.
#[derive(Debug)]
enum Write {
    Publish {
        /// None: every server.
        to: Option<ServerId>,
        text: String,
        /// A signal `(from, to)`: if no server reads the inbox (it died), `from` is told
        /// at once that `to` is unknown.
        bounce: Option<(PeerId, PeerId)>,
    },
    Present {
        channel: ChannelName,
        peer: PeerId,
        open: bool,
    },
    Absent {
        channel: ChannelName,
        peer: PeerId,
    },
    Broadcaster {
        channel: ChannelName,
        peer: PeerId,
        session: Option<SessionId>,
        open: bool,
    },
    /// Removes the broadcaster entry only if it still names `peer`: a late cleanup of an
    /// old session never removes a newer one on another server.
    BroadcasterGone {
        channel: ChannelName,
        peer: PeerId,
    },
}

impl Cluster {
    /// Joins the servers sharing `url`'s Redis. Starts even if Redis does not answer yet
    /// (then serving its own peers only until it does); a malformed URL is an error.
    pub async fn start(
        url: &str,
        rooms: Arc<Mutex<Rooms>>,
        owners: Arc<Mutex<Owners>>,
    ) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url:?}: {e}"))?;
        let me = ServerId(rand::random::<u64>().max(1));
        rooms
            .lock()
            .expect("rooms lock is never poisoned")
            .set_server(me);
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let cluster = Arc::new(Cluster {
            me,
            client,
            rooms,
            owners,
            connection: Mutex::new(None),
            writes,
            servers: Mutex::new(Servers {
                listed: HashSet::from([me]),
                known: HashSet::from([me]),
            }),
            health: Mutex::new(Health {
                up: false,
                subscribed: false,
                since: SystemTime::now(),
                error: Some("not connected yet".into()),
            }),
            counters: Counters::default(),
        });
        tracing::info!(server = %me, "sharing channels through Redis");
        // Shared from the first connection if Redis answers now; else the heartbeat
        // keeps trying while this server serves its own peers.
        let beat = tasks::first_heartbeat(&cluster).await;
        tasks::spawn(cluster.clone(), queue, beat);
        Ok(cluster)
    }

    /// Whether Redis answers, and a line for `/healthz`.
    pub fn health(&self) -> (bool, String) {
        let health = self.lock_health();
        let since = health
            .since
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if health.up && !health.subscribed {
            return (
                false,
                "degraded: not reading other servers' notes yet (subscribing to Redis)".into(),
            );
        }
        if health.up {
            let servers = self.lock_servers().listed.len();
            (
                true,
                format!(
                    "ok: server {} of {servers} sharing channels through Redis",
                    self.me
                ),
            )
        } else {
            let error = health.error.as_deref().unwrap_or("unknown error");
            (
                false,
                format!(
                    "degraded: Redis unreachable since {since} (Unix s): {error}; serving this \
                     server's peers only"
                ),
            )
        }
    }

    /// The cluster's lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (up, _) = self.health();
        let gauges = [
            ("streamtorrent_redis_up", "Whether Redis answers (1) or this server serves its own peers only (0).", u64::from(up)),
            ("streamtorrent_cluster_servers", "Signal servers sharing channels through Redis, this one included, at the last heartbeat.", self.lock_servers().listed.len() as u64),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let c = &self.counters;
        let counters = [
            (
                "streamtorrent_cluster_notes_sent_total",
                "Notes published to other servers (relayed signals, contacts, leaves, claims).",
                &c.notes_out,
            ),
            (
                "streamtorrent_cluster_notes_received_total",
                "Notes from other servers applied here.",
                &c.notes_in,
            ),
            (
                "streamtorrent_cluster_notes_unread_total",
                "Notes from other servers that could not be read (broken, or a newer kind).",
                &c.notes_unread,
            ),
            (
                "streamtorrent_cluster_writes_dropped_total",
                "Writes to Redis given up: Redis down, the queue full, or a batch unanswered within 1 s (it may still have been carried out).",
                &c.writes_dropped,
            ),
            (
                "streamtorrent_cluster_servers_gone_total",
                "Other signal servers found gone (no heartbeat for 8 s); their peers were forgotten here.",
                &c.servers_gone,
            ),
            (
                "streamtorrent_cluster_slow_answers_total",
                "Redis requests given up while Redis counted as up (after 1 s, 3 s for the presence refresh: a join then meets this server's peers only, a batch of writes is given up, a refresh is tried again).",
                &c.slow_answers,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }

    /// The channel's broadcaster, peers to introduce and owner, as Redis lists them;
    /// None while Redis does not answer (the caller introduces from its own rooms).
    pub async fn view(&self, channel: &ChannelName, wanted: usize) -> Option<View> {
        let mut con = self.connection()?;
        let count = (wanted * CANDIDATES_PER_PEER).max(1);
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANDMEMBER")
            .arg(keys::open(channel))
            .arg(count)
            .arg("WITHSCORES");
        pipe.cmd("ZRANDMEMBER")
            .arg(keys::peers(channel))
            .arg(count)
            .arg("WITHSCORES");
        pipe.cmd("HGETALL").arg(keys::broadcaster(channel));
        pipe.cmd("GET").arg(keys::owner(channel));
        type Reply = (
            Vec<String>,
            Vec<String>,
            HashMap<String, String>,
            Option<String>,
        );
        let (open, all, broadcaster, owner): Reply = self.query(pipe.query_async(&mut con)).await?;
        let now = unix_ms();
        let servers = self.lock_servers();
        let alive = |pairs: Vec<String>| -> Vec<Contact> {
            pairs
                .chunks_exact(2)
                .filter(|pair| {
                    pair[1]
                        .parse::<f64>()
                        .is_ok_and(|expiry| expiry >= now as f64)
                })
                .filter_map(|pair| parse_member(&pair[0]))
                .filter(|c| servers.alive(c.server))
                .collect()
        };
        let mut peers = alive(open);
        for contact in alive(all) {
            if !peers.contains(&contact) {
                peers.push(contact);
            }
        }
        let broadcaster = read_broadcaster(&broadcaster).filter(|(c, ..)| servers.alive(c.server));
        drop(servers);
        let owner = owner.and_then(|hex| hex.parse().ok());
        Some(View {
            session: broadcaster.and_then(|(_, _, session)| session),
            candidates: Candidates {
                broadcaster: broadcaster.map(|(contact, open, _)| (contact, open)),
                peers,
            },
            owner,
        })
    }

    /// Claims `channel` for `key`, atomically across servers: Some(Ok) if `key` owns it
    /// now, Some(Err(owner)) if another key does, None while Redis does not answer.
    pub async fn claim(
        &self,
        channel: &ChannelName,
        key: &ChannelKey,
    ) -> Option<Result<(), Option<ChannelKey>>> {
        let mut con = self.connection()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(keys::owner(channel))
            .arg(key.to_string())
            .arg("NX")
            .arg("GET");
        let before: Option<String> = self.query(cmd.query_async(&mut con)).await?;
        match before {
            None => Some(Ok(())),
            Some(hex) if hex == key.to_string() => Some(Ok(())),
            Some(hex) => Some(Err(hex.parse().ok())),
        }
    }

    /// The channel's owner as Redis has it: Some(None) for nobody yet, None while Redis
    /// does not answer.
    pub async fn owner(&self, channel: &ChannelName) -> Option<Option<ChannelKey>> {
        let mut con = self.connection()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(keys::owner(channel));
        let hex: Option<String> = self.query(cmd.query_async(&mut con)).await?;
        Some(hex.and_then(|h| h.parse().ok()))
    }

    /// The servers listed at the last heartbeat.
    fn listed(&self) -> HashSet<ServerId> {
        self.lock_servers().listed.clone()
    }

    /// Records the servers listed at a heartbeat.
    fn set_listed(&self, listed: HashSet<ServerId>) {
        let mut servers = self.lock_servers();
        servers.known.extend(listed.iter().copied());
        servers.listed = listed;
    }

    /// Every live channel on every server, with its viewers there and its owner; None
    /// while Redis does not answer.
    pub async fn live_channels(&self) -> Option<Vec<ChannelSummary>> {
        let mut con = self.connection()?;
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(keys::LIVE);
        let names: Vec<String> = self.query(cmd.query_async(&mut con)).await?;
        let names: Vec<ChannelName> = names.iter().filter_map(|n| n.parse().ok()).collect();
        let now = unix_ms();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HGETALL").arg(keys::broadcaster(name));
            pipe.cmd("ZCOUNT")
                .arg(keys::peers(name))
                .arg(now)
                .arg("+inf");
            pipe.cmd("GET").arg(keys::owner(name));
        }
        let values: Vec<redis::Value> = if names.is_empty() {
            Vec::new()
        } else {
            self.query(pipe.query_async(&mut con)).await?
        };
        // Three replies per channel, in the order asked.
        let rows = values.chunks_exact(3).map(|row| {
            (
                redis::from_redis_value_ref::<HashMap<String, String>>(&row[0]).unwrap_or_default(),
                redis::from_redis_value_ref::<usize>(&row[1]).unwrap_or_default(),
                redis::from_redis_value_ref::<Option<String>>(&row[2]).unwrap_or_default(),
            )
        });
        let servers = self.lock_servers();
        let mut live: BTreeMap<ChannelName, ChannelSummary> = BTreeMap::new();
        for (name, (broadcaster, peers, owner)) in names.into_iter().zip(rows) {
            let on_air =
                read_broadcaster(&broadcaster).is_some_and(|(c, ..)| servers.alive(c.server));
            if on_air {
                live.insert(
                    name.clone(),
                    ChannelSummary {
                        name,
                        viewers: peers.saturating_sub(1),
                        key: owner.and_then(|h| h.parse().ok()),
                    },
                );
            }
        }
        Some(live.into_values().collect())
    }

    /// After a join here: list the peer, tell the servers of its remote introductions,
    /// and (a broadcaster) take over the channel from an older session anywhere.
    pub fn joined(
        &self,
        joined: &Joined,
        channel: &ChannelName,
        role: Role,
        session: Option<SessionId>,
        view: Option<&View>,
    ) {
        if let Some(replaced) = &joined.replaced {
            self.left(replaced);
        }
        for contact in &joined.remote {
            self.publish(
                Some(contact.server),
                Note::Contact {
                    peer: contact.peer,
                    other: joined.peer,
                },
            );
        }
        self.write(Write::Present {
            channel: channel.clone(),
            peer: joined.peer,
            open: true,
        });
        if role == Role::Broadcaster {
            let old = view.and_then(|v| v.candidates.broadcaster).map(|(c, _)| c);
            if let Some(old) = old.filter(|c| c.server != self.me) {
                self.publish(Some(old.server), Note::Replace { peer: old.peer });
            }
            self.write(Write::Broadcaster {
                channel: channel.clone(),
                peer: joined.peer,
                session,
                open: true,
            });
        }
    }

    /// After a `more_peers` here: tell the servers of its remote introductions.
    pub fn introduced(&self, joined: &Joined) {
        for contact in &joined.remote {
            self.publish(
                Some(contact.server),
                Note::Contact {
                    peer: contact.peer,
                    other: joined.peer,
                },
            );
        }
    }

    /// After a peer here left: unlist it, and tell its contacts on other servers.
    pub fn left(&self, left: &Left) {
        let mut by_server: BTreeMap<ServerId, Vec<PeerId>> = BTreeMap::new();
        for contact in &left.remote {
            by_server
                .entry(contact.server)
                .or_default()
                .push(contact.peer);
        }
        for (server, to) in by_server {
            self.publish(
                Some(server),
                Note::Left {
                    peer: left.peer,
                    to,
                },
            );
        }
        self.write(Write::Absent {
            channel: left.channel.clone(),
            peer: left.peer,
        });
        if left.broadcaster {
            self.write(Write::BroadcasterGone {
                channel: left.channel.clone(),
                peer: left.peer,
            });
        }
    }

    /// A peer here changed whether it has free slots.
    pub fn status(
        &self,
        peer: PeerId,
        channel: ChannelName,
        open: bool,
        broadcast: Option<Option<SessionId>>,
    ) {
        if let Some(session) = broadcast {
            self.write(Write::Broadcaster {
                channel: channel.clone(),
                peer,
                session,
                open,
            });
        }
        self.write(Write::Present {
            channel,
            peer,
            open,
        });
    }

    /// Passes a signal to `to` on `server`. False when that server is not alive or the
    /// signal cannot be queued: the sender is told at once that the peer is unknown.
    pub fn relay(
        &self,
        server: ServerId,
        from: PeerId,
        to: PeerId,
        channel: ChannelName,
        signal: SignalPayload,
    ) -> bool {
        if !self.lock_servers().alive(server) || !self.lock_health().up {
            return false;
        }
        self.counters.notes_out.fetch_add(1, Ordering::Relaxed);
        let note = Note::Signal {
            from,
            to,
            channel,
            signal,
        };
        self.write(Write::Publish {
            to: Some(server),
            text: Envelope::encode(self.me, note),
            bounce: Some((from, to)),
        })
    }

    /// Tells `channel`'s peers on every other server (this one's are told directly).
    pub fn tell_channel(&self, channel: &ChannelName, except: PeerId, message: &ServerMessage) {
        self.publish(
            None,
            Note::Channel {
                channel: channel.clone(),
                except,
                message: Box::new(message.clone()),
            },
        );
    }

    fn publish(&self, to: Option<ServerId>, note: Note) -> bool {
        self.counters.notes_out.fetch_add(1, Ordering::Relaxed);
        self.write(Write::Publish {
            to,
            text: Envelope::encode(self.me, note),
            bounce: None,
        })
    }

    fn write(&self, write: Write) -> bool {
        if self.writes.try_send(write).is_ok() {
            return true;
        }
        self.counters.writes_dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The connection, while Redis answers.
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .expect("connection lock is never poisoned")
            .clone()
    }

    /// Runs one Redis request within `COMMAND_TIMEOUT`; a broken connection marks Redis
    /// down, a late answer does not (only the heartbeat's does).
    async fn query<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        self.ask(request, COMMAND_TIMEOUT, false).await
    }

    /// A big request (the presence refresh): given `HEARTBEAT_TIMEOUT`, and a late answer
    /// does not mark Redis down.
    async fn slow_query<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        self.ask(request, HEARTBEAT_TIMEOUT, false).await
    }

    /// The heartbeat's request: no answer within `HEARTBEAT_TIMEOUT` marks Redis down.
    async fn beat_query<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        self.ask(request, HEARTBEAT_TIMEOUT, true).await
    }

    async fn ask<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
        within: Duration,
        late_is_down: bool,
    ) -> Option<T> {
        let late = match tokio::time::timeout(within, request).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) if e.is_timeout() => e.to_string(),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                self.set_down(e.to_string());
                return None;
            }
            Ok(Err(e)) => {
                // Redis answered, with something this server did not expect.
                tracing::warn!(error = %e, "a Redis request failed");
                return None;
            }
            Err(_) => format!("no answer within {} ms", within.as_millis()),
        };
        if late_is_down {
            self.set_down(late);
        } else {
            self.counters.slow_answers.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %late, "a Redis request was given up");
        }
        None
    }

    /// Redis stopped answering: drop the connection (the heartbeat reconnects).
    fn set_down(&self, error: String) {
        *self
            .connection
            .lock()
            .expect("connection lock is never poisoned") = None;
        let mut health = self.lock_health();
        if health.up {
            tracing::warn!(%error, "Redis unreachable: serving this server's peers only");
            health.up = false;
            health.since = SystemTime::now();
        }
        health.error = Some(error);
    }

    /// Whether this server's inbox is being read.
    fn set_subscribed(&self, subscribed: bool) {
        self.lock_health().subscribed = subscribed;
    }

    /// Redis answers again; returns whether it was down.
    fn set_up(&self) -> bool {
        let mut health = self.lock_health();
        let was_down = !health.up;
        if was_down {
            tracing::info!(server = %self.me, "Redis reachable: sharing channels");
            health.up = true;
            health.since = SystemTime::now();
            health.error = None;
        }
        was_down
    }

    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        // Rooms' methods never panic while holding the lock.
        self.rooms.lock().expect("rooms lock is never poisoned")
    }

    fn lock_servers(&self) -> MutexGuard<'_, Servers> {
        self.servers
            .lock()
            .expect("server list lock is never poisoned")
    }

    fn lock_health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().expect("health lock is never poisoned")
    }
}

/// A broadcaster entry: who, whether it has free slots, its broadcast.
fn read_broadcaster(
    fields: &HashMap<String, String>,
) -> Option<(Contact, bool, Option<SessionId>)> {
    let peer = u64::from_str_radix(fields.get("peer")?, 16).ok()?;
    let server = fields.get("server")?.parse().ok()?;
    let open = fields.get("open").is_none_or(|o| o == "1");
    let session = fields.get("session").and_then(|s| s.parse().ok());
    Some((
        Contact {
            peer: PeerId(peer),
            server,
        },
        open,
        session,
    ))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The entry a peer of this server is listed under.
fn listed_as(me: ServerId, peer: PeerId) -> String {
    member(Contact { peer, server: me })
}
