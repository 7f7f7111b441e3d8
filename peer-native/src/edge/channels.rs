//! The channels an edge follows: one headless viewer (`node::run`, as `watch` runs it)
//! per channel, whose verified content fills the channel's `Shelf`, and requests waiting
//! for what is not on it yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use protocol::{ChannelName, ChunkSeq, Role, SessionId};
use swarm::{Chunk, Signed};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::shelf::{Lookup, Shelf};
use crate::node::{self, NodeOptions, Sink};
use crate::NativeError;

/// A channel followed on request and not asked for in this long is let go.
pub const IDLE_AFTER: Duration = Duration::from_secs(300);
/// After its viewer ends (the server refused it, say), a channel is joined again after
/// this long, if still wanted.
const REJOIN_AFTER: Duration = Duration::from_secs(5);

/// How the edge's viewers join.
#[derive(Debug, Clone)]
pub struct Joining {
    pub server: String,
    pub upload_limit: Option<swarm::BytesPerSec>,
    pub relay_only: bool,
}

/// Why a channel is not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFollowed {
    /// The edge serves a fixed list of channels, and this is not on it.
    NotListed,
    /// The edge follows as many channels as it may.
    Full { max: usize },
}

/// Every channel followed, by name.
pub struct Channels {
    joining: Joining,
    /// `Some`: only these, followed from the start and never let go.
    listed: Option<BTreeSet<ChannelName>>,
    max: usize,
    followed: Mutex<HashMap<ChannelName, Arc<Followed>>>,
}

/// One channel followed.
pub struct Followed {
    shelf: Mutex<Shelf>,
    /// Bumped whenever the shelf takes something, for requests waiting on it.
    changed: watch::Sender<u64>,
    last_asked: Mutex<Instant>,
    viewer: Mutex<Option<AbortHandle>>,
}

impl Channels {
    /// Follows `listed` at once when given (and only those), else any channel asked for,
    /// up to `max`.
    pub fn new(joining: Joining, listed: Vec<ChannelName>, max: usize) -> Arc<Channels> {
        let listed = (!listed.is_empty()).then(|| listed.into_iter().collect::<BTreeSet<_>>());
        let channels = Arc::new(Channels {
            joining,
            max: listed.as_ref().map_or(max, BTreeSet::len),
            listed,
            followed: Mutex::new(HashMap::new()),
        });
        for name in channels.listed.iter().flatten() {
            let _ = channels.follow(name);
        }
        channels
    }

    /// The channel's content, followed from now on if it was not.
    pub fn follow(self: &Arc<Self>, name: &ChannelName) -> Result<Arc<Followed>, NotFollowed> {
        if self.listed.as_ref().is_some_and(|l| !l.contains(name)) {
            return Err(NotFollowed::NotListed);
        }
        let mut followed = lock(&self.followed);
        if let Some(channel) = followed.get(name) {
            return Ok(channel.clone());
        }
        if followed.len() >= self.max {
            return Err(NotFollowed::Full { max: self.max });
        }
        let channel = Arc::new(Followed {
            shelf: Mutex::new(Shelf::default()),
            changed: watch::channel(0).0,
            last_asked: Mutex::new(Instant::now()),
            viewer: Mutex::new(None),
        });
        let task = tokio::spawn(view(self.joining.clone(), name.clone(), channel.clone()));
        *lock(&channel.viewer) = Some(task.abort_handle());
        followed.insert(name.clone(), channel.clone());
        tracing::info!(channel = %name, "following");
        Ok(channel)
    }

    /// Whether `name` is followed now.
    pub fn follows(&self, name: &ChannelName) -> bool {
        lock(&self.followed).contains_key(name)
    }

    /// Lets go of channels followed on request that nobody asked for in `IDLE_AFTER`.
    pub fn let_go_of_idle(&self) {
        if self.listed.is_some() {
            return;
        }
        lock(&self.followed).retain(|name, channel| {
            let idle = lock(&channel.last_asked).elapsed() >= IDLE_AFTER;
            if idle {
                tracing::info!(channel = %name, "nobody asked for it lately: leaving");
                if let Some(viewer) = lock(&channel.viewer).take() {
                    viewer.abort();
                }
            }
            !idle
        });
    }

    /// How many channels are followed, and the chunk bytes they hold.
    pub fn load(&self) -> (usize, usize) {
        let followed = lock(&self.followed);
        let bytes = followed.values().map(|c| lock(&c.shelf).bytes()).sum();
        (followed.len(), bytes)
    }
}

impl Followed {
    /// What `look` finds on the shelf, waiting up to `wait` while it says `NotYet`.
    pub async fn look(&self, wait: Duration, look: impl Fn(&Shelf) -> Lookup) -> Lookup {
        let deadline = Instant::now() + wait;
        // Subscribed before looking, so nothing stored in between goes unnoticed.
        let mut changes = self.changed.subscribe();
        loop {
            let found = look(&lock(&self.shelf));
            if let Lookup::Here(_) = found {
                self.served();
            }
            if found != Lookup::NotYet {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time; or the viewer is gone, so nothing more comes.
                Ok(Err(_)) | Err(_) => return found,
            }
        }
    }

    /// Someone got content of this channel: it stays followed a while longer. (Only
    /// content counts, so requests that find nothing keep no channel.)
    pub fn served(&self) {
        *lock(&self.last_asked) = Instant::now();
    }

    /// The shelf as it is now (for the index, which never waits).
    pub fn shelf(&self) -> MutexGuard<'_, Shelf> {
        lock(&self.shelf)
    }

    fn store(&self, session: SessionId, content: Signed) {
        lock(&self.shelf).store(std::time::Instant::now(), session, content);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The channel's viewer, joined again whenever it ends, until aborted.
async fn view(joining: Joining, channel: ChannelName, followed: Arc<Followed>) {
    loop {
        let options = NodeOptions {
            server: joining.server.clone(),
            channel: channel.clone(),
            role: Role::Viewer,
            upload_limit: joining.upload_limit,
            substreams: None,
            key: None,
            relay_only: joining.relay_only,
            pieces_channel: Default::default(),
            edge: true,
            #[cfg(feature = "test-hooks")]
            hooks: Default::default(),
        };
        let mut sink = Shelving(followed.clone());
        match node::run(options, None, &mut sink, std::future::pending()).await {
            Ok(_) => tracing::info!(%channel, "the channel's viewer ended"),
            Err(e) => tracing::warn!(%channel, error = %e, "the channel's viewer ended"),
        }
        tokio::time::sleep(REJOIN_AFTER).await;
    }
}

/// Puts what the edge's viewer verified on the shelf; it plays nothing.
struct Shelving(Arc<Followed>);

impl Sink for Shelving {
    fn init(&mut self, _mime: &str, _data: &[u8]) -> Result<(), NativeError> {
        Ok(())
    }

    fn play(&mut self, _chunk: &Chunk, _starts_in: Duration) -> Result<bool, NativeError> {
        Ok(false)
    }

    fn skipped(&mut self, seq: ChunkSeq) {
        tracing::debug!(%seq, "the edge's viewer skipped a chunk");
    }

    fn signed(&mut self, session: SessionId, content: Signed) {
        self.0.store(session, content);
    }
}

/// Locks a mutex no holder panics under (each critical section is a few map operations).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("no edge lock holder panics: the sections only touch maps")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joining() -> Joining {
        // Nothing listens there: the viewers only retry, which is all these tests need.
        Joining {
            server: "ws://127.0.0.1:9/ws".into(),
            upload_limit: None,
            relay_only: false,
        }
    }

    #[tokio::test]
    async fn at_most_max_channels_are_followed_on_request() {
        let channels = Channels::new(joining(), Vec::new(), 1);
        let first: ChannelName = "first".parse().unwrap();
        assert!(channels.follow(&first).is_ok());
        assert!(channels.follow(&first).is_ok(), "the same one again");
        let second: ChannelName = "second".parse().unwrap();
        assert_eq!(
            channels.follow(&second).err(),
            Some(NotFollowed::Full { max: 1 })
        );
        assert!(channels.follows(&first) && !channels.follows(&second));
    }

    #[tokio::test]
    async fn a_listed_edge_follows_its_list_only() {
        let only: ChannelName = "only".parse().unwrap();
        let channels = Channels::new(joining(), vec![only.clone()], 16);
        assert!(channels.follows(&only), "followed from the start");
        let other: ChannelName = "other".parse().unwrap();
        assert_eq!(channels.follow(&other).err(), Some(NotFollowed::NotListed));
    }
}
