//! A connection's queue of outgoing messages: the rooms post to its [`Mailbox`], the
//! connection task takes them from its [`Outbox`].
//!
//! Tens of thousands of connections sit idle with nothing queued, so an idle queue costs
//! one small allocation: the queue's storage exists only while messages wait, and one
//! [`Notify`] wakes the connection for all it must do: write a message, close when kicked
//! or at shutdown, send its ping (see `liveness`). (tokio's bounded channel allocated a
//! first block of 32 slots up front, ~1 KiB per connection.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::ServerMessage;
use tokio::sync::Notify;

/// How to reach a peer's connection; cheap to clone.
#[derive(Clone)]
pub struct Mailbox {
    shared: Arc<Shared>,
}

/// The connection's end of its mailbox.
pub struct Outbox {
    shared: Arc<Shared>,
}

/// What the connection should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Write this message (JSON text).
    Message(Box<str>),
    /// Its queue overflowed: the client is not reading, so the connection closes.
    Kicked,
    /// The server is shutting down: the connection closes, going away.
    ShutDown,
    /// Time for its ping (and to check that the client is still heard from).
    Ping,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Woken when a message is queued or the connection is kicked; a wake with nobody
    /// waiting is kept for the next wait, so none is lost.
    wake: Notify,
    /// Messages waiting at most: a peer that lets more pile up is not reading.
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    /// Queued as JSON text (16 bytes a slot).
    messages: VecDeque<Box<str>>,
    kicked: bool,
    shutting_down: bool,
    ping_due: bool,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages, and its connection's end.
    pub fn new(capacity: usize) -> (Mailbox, Outbox) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            capacity,
        });
        (
            Mailbox {
                shared: shared.clone(),
            },
            Outbox { shared },
        )
    }

    /// Queues a reply for this peer; a full queue drops it (the peer is not reading, and
    /// its next [`Mailbox::deliver`] closes it).
    pub fn post(&self, message: &ServerMessage) {
        self.push(message.to_json().into_boxed_str());
    }

    /// Queues a message for this peer, or has its connection closed when its queue is
    /// full: the server never buffers without limit for a client that does not read.
    pub fn deliver(&self, message: &ServerMessage) {
        if !self.push(message.to_json().into_boxed_str()) {
            self.raise(|queue| queue.kicked = true);
        }
    }

    /// The server is shutting down.
    pub(crate) fn shut_down(&self) {
        self.raise(|queue| queue.shutting_down = true);
    }

    /// A ping is due.
    pub(crate) fn ping_due(&self) {
        self.raise(|queue| queue.ping_due = true);
    }

    /// Sets one of the queue's flags and wakes the connection.
    fn raise(&self, set: impl FnOnce(&mut Queue)) {
        set(&mut self.shared.queue());
        self.shared.wake.notify_one();
    }

    /// Whether the message was queued.
    fn push(&self, text: Box<str>) -> bool {
        let mut queue = self.shared.queue();
        if queue.messages.len() >= self.shared.capacity {
            return false;
        }
        queue.messages.push_back(text);
        drop(queue);
        self.shared.wake.notify_one();
        true
    }
}

impl Outbox {
    /// What the connection should do next (see [`Outbox::try_next`]); waits while there is
    /// nothing.
    pub async fn next(&self) -> Outgoing {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.shared.wake.notified().await;
        }
    }

    /// Returns once the connection is kicked (for a write that is blocked meanwhile).
    pub async fn kicked(&self) {
        while !self.shared.queue().kicked {
            self.shared.wake.notified().await;
        }
    }

    /// What to do now, if anything: a close first, then a ping that is due (ahead of
    /// messages, so that a connection whose queue never empties is still pinged and
    /// checked for silence), then the oldest message.
    pub fn try_next(&self) -> Option<Outgoing> {
        let mut queue = self.shared.queue();
        if queue.kicked {
            return Some(Outgoing::Kicked);
        }
        if queue.shutting_down {
            return Some(Outgoing::ShutDown);
        }
        if std::mem::take(&mut queue.ping_due) {
            return Some(Outgoing::Ping);
        }
        queue.pop().map(Outgoing::Message)
    }

    /// The oldest message, whatever else is pending: what a closing connection still sends.
    pub fn try_next_message(&self) -> Option<Box<str>> {
        self.shared.queue().pop()
    }
}

impl Queue {
    fn pop(&mut self) -> Option<Box<str>> {
        let message = self.messages.pop_front()?;
        if self.messages.is_empty() {
            // Give the storage back: most connections are idle most of the time.
            self.messages = VecDeque::new();
        }
        Some(message)
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding this lock, so it is never poisoned.
        self.queue.lock().expect("a mailbox lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ErrorCode;

    fn message(n: u32) -> ServerMessage {
        ServerMessage::Error {
            code: ErrorCode::RateLimited,
            message: n.to_string(),
        }
    }

    fn text(n: u32) -> Outgoing {
        Outgoing::Message(message(n).to_json().into_boxed_str())
    }

    #[test]
    fn messages_come_out_in_order_and_an_idle_queue_holds_no_storage() {
        let (mailbox, outbox) = Mailbox::new(4);
        mailbox.post(&message(1));
        mailbox.deliver(&message(2));
        assert_eq!(outbox.try_next(), Some(text(1)));
        assert_eq!(outbox.try_next(), Some(text(2)));
        assert_eq!(outbox.try_next(), None);
        assert_eq!(outbox.shared.queue().messages.capacity(), 0);
    }

    #[test]
    fn a_full_queue_drops_a_post_and_kicks_on_a_delivery() {
        let (mailbox, outbox) = Mailbox::new(2);
        mailbox.post(&message(1));
        mailbox.post(&message(2));
        mailbox.post(&message(3)); // Dropped, no kick.
        assert!(!outbox.shared.queue().kicked);
        mailbox.deliver(&message(4));
        // The kick comes before what is still queued: the connection closes now.
        assert_eq!(outbox.try_next(), Some(Outgoing::Kicked));
    }

    #[test]
    fn a_close_comes_first_then_a_due_ping_then_messages() {
        let (mailbox, outbox) = Mailbox::new(4);
        mailbox.post(&message(1));
        mailbox.ping_due();
        assert_eq!(outbox.try_next(), Some(Outgoing::Ping));
        assert_eq!(outbox.try_next(), Some(text(1)));
        assert_eq!(outbox.try_next(), None, "one ping per time it is due");
        mailbox.post(&message(2));
        mailbox.shut_down();
        assert_eq!(outbox.try_next(), Some(Outgoing::ShutDown));
        // A closing connection still sends what was queued.
        assert_eq!(
            outbox.try_next_message().as_deref(),
            Some(message(2).to_json().as_str())
        );
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_for_a_message_and_for_a_kick() {
        let (mailbox, outbox) = Mailbox::new(1);
        let waiting = tokio::spawn(async move { (outbox.next().await, outbox) });
        tokio::task::yield_now().await; // It waits with nothing queued.
        mailbox.deliver(&message(1));
        let (first, outbox) = waiting.await.unwrap();
        assert_eq!(first, text(1));

        let waiting = tokio::spawn(async move { outbox.kicked().await });
        tokio::task::yield_now().await;
        mailbox.deliver(&message(2)); // Queued: no kick yet.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        mailbox.deliver(&message(3)); // Over capacity.
        waiting.await.unwrap();
    }
}
