//! Every connection's pings, idle checks and shutdown close, driven by one task for the
//! whole server instead of a timer and a shutdown watch in each connection: with tens of
//! thousands of idle connections, those were a few hundred bytes each.
//!
//! Each second the sweeper tells one slice of the connections that a ping is due (the
//! connection numbered `n` in the second `s` when `n ≡ s` modulo the ping interval), so a
//! connection is pinged once per interval and the pings of a big audience are spread over
//! it rather than sent in one burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::mailbox::Mailbox;

/// The open connections, each reachable through its mailbox.
#[derive(Default)]
pub(crate) struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Numbers connections as they open; never reused while the server runs.
    next: u64,
    open: HashMap<u64, Mailbox>,
    /// Set once: connections open now are closed, and later ones at once.
    shutting_down: bool,
}

/// A connection's place in [`Connections`]; leaving it when dropped, however the
/// connection ends.
pub(crate) struct Registered<'a> {
    connections: &'a Connections,
    number: u64,
}

impl Connections {
    /// Adds a connection; during shutdown it is told to close at once.
    pub fn register(&self, mailbox: &Mailbox) -> Registered<'_> {
        let mut inner = self.inner();
        let number = inner.next;
        inner.next += 1;
        if inner.shutting_down {
            mailbox.shut_down();
        }
        inner.open.insert(number, mailbox.clone());
        Registered {
            connections: self,
            number,
        }
    }

    /// Tells every connection to close (with 1001, going away), now and from now on.
    pub fn shut_down(&self) {
        let mut inner = self.inner();
        inner.shutting_down = true;
        for mailbox in inner.open.values() {
            mailbox.shut_down();
        }
    }

    /// Second `second` of the sweep: the connections whose ping falls in it are told.
    fn sweep(&self, second: u64, ping_every_secs: u64) {
        let every = ping_every_secs.max(1);
        let inner = self.inner();
        for (number, mailbox) in &inner.open {
            if number % every == second % every {
                mailbox.ping_due();
            }
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock, so it is never poisoned.
        self.inner
            .lock()
            .expect("the connections lock is never poisoned")
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.connections.inner().open.remove(&self.number);
    }
}

/// Runs the sweep once a second for as long as the server holds `connections`.
async fn sweep(connections: Weak<Connections>, ping_every_secs: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = 0u64;
    loop {
        tick.tick().await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        connections.sweep(second, ping_every_secs);
        second += 1;
    }
}

/// Starts the sweeper of a new, empty set of connections.
pub(crate) fn start(ping_every_secs: u64) -> Arc<Connections> {
    let connections = Arc::new(Connections::default());
    tokio::spawn(sweep(Arc::downgrade(&connections), ping_every_secs));
    connections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Outgoing;

    #[test]
    fn each_connection_is_pinged_once_an_interval_and_the_pings_are_spread() {
        let connections = Connections::default();
        let opened: Vec<_> = (0..6).map(|_| Mailbox::new(4)).collect();
        let _registered: Vec<_> = opened
            .iter()
            .map(|(mailbox, _)| connections.register(mailbox))
            .collect();
        let mut pinged = vec![0; 6];
        for second in 0..9 {
            connections.sweep(second, 3);
            let now: Vec<usize> = opened
                .iter()
                .enumerate()
                .filter(|(_, (_, outbox))| outbox.try_next() == Some(Outgoing::Ping))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(now.len(), 2, "second {second}: {now:?} pinged");
            for i in now {
                pinged[i] += 1;
            }
        }
        assert_eq!(pinged, vec![3; 6]);
    }

    #[test]
    fn shutting_down_closes_open_connections_and_later_ones_and_a_closed_one_is_forgotten() {
        let connections = Connections::default();
        let (early, early_out) = Mailbox::new(4);
        let registered = connections.register(&early);
        let (gone, gone_out) = Mailbox::new(4);
        drop(connections.register(&gone));
        connections.shut_down();
        assert_eq!(early_out.try_next(), Some(Outgoing::ShutDown));
        assert_eq!(gone_out.try_next(), None, "a closed connection is not told");
        let (late, late_out) = Mailbox::new(4);
        let _late = connections.register(&late);
        assert_eq!(late_out.try_next(), Some(Outgoing::ShutDown));
        drop(registered);
        assert_eq!(connections.inner().open.len(), 1);
    }
}
