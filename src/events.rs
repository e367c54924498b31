//! Fan-out of events to subscribers (GetContainerEvents): every subscriber
//! gets every event published after it subscribed, in order. Publishing
//! never waits: each subscriber has a bounded queue, and one whose queue
//! is full is dropped and told so ([`Lagged`]) instead of slowing the
//! runtime or silently missing events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Subscribers at most at once (each costs a queue of `backlog` events).
pub const MAX_SUBSCRIBERS: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the subscriber fell more than {0} events behind and was dropped; subscribe again")]
    Lagged(usize),
    #[error("too many event subscribers (at most {MAX_SUBSCRIBERS})")]
    TooManySubscribers,
}

impl crate::error::Classify for EventError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::ResourceExhausted
    }
}

struct Subscriber<T> {
    queue: mpsc::Sender<T>,
    dropped: Arc<AtomicBool>,
}

pub struct EventHub<T> {
    subscribers: Mutex<Vec<Subscriber<T>>>,
    backlog: usize,
}

/// One subscriber's end.
pub struct Subscription<T> {
    queue: mpsc::Receiver<T>,
    dropped: Arc<AtomicBool>,
    backlog: usize,
}

impl<T> Subscription<T> {
    /// The next event; `Err(Lagged)` once (then `None`) when this
    /// subscriber was dropped for falling behind.
    pub async fn next(&mut self) -> Option<Result<T, EventError>> {
        match self.queue.recv().await {
            Some(event) => Some(Ok(event)),
            None if self.dropped.swap(false, Ordering::SeqCst) => {
                Some(Err(EventError::Lagged(self.backlog)))
            }
            None => None,
        }
    }
}

impl<T: Clone> EventHub<T> {
    /// `backlog`: events a subscriber may fall behind before it is dropped.
    pub fn new(backlog: usize) -> EventHub<T> {
        EventHub {
            subscribers: Mutex::new(Vec::new()),
            backlog: backlog.max(1),
        }
    }

    pub fn subscribe(&self) -> Result<Subscription<T>, EventError> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| !s.queue.is_closed());
        if subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(EventError::TooManySubscribers);
        }
        let (queue, receiver) = mpsc::channel(self.backlog);
        let dropped = Arc::new(AtomicBool::new(false));
        subscribers.push(Subscriber {
            queue,
            dropped: Arc::clone(&dropped),
        });
        Ok(Subscription {
            queue: receiver,
            dropped,
            backlog: self.backlog,
        })
    }

    /// Hands `event` to every subscriber without waiting; drops those
    /// whose queue is full and those that went away.
    pub fn publish(&self, event: &T) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| match s.queue.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.dropped.store(true, Ordering::SeqCst);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Drops every subscriber with [`EventError::Lagged`]: for when the
    /// hub itself missed events.
    pub fn drop_all(&self) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for s in subscribers.drain(..) {
            s.dropped.store(true, Ordering::SeqCst);
        }
    }

    pub fn subscribers(&self) -> usize {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| !s.queue.is_closed());
        subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_later_event_in_order() {
        let hub = EventHub::new(8);
        hub.publish(&0);
        let mut a = hub.subscribe().unwrap();
        let mut b = hub.subscribe().unwrap();
        for n in 1..=5 {
            hub.publish(&n);
        }
        for sub in [&mut a, &mut b] {
            for n in 1..=5 {
                assert_eq!(sub.next().await, Some(Ok(n)));
            }
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_with_an_error_and_the_others_continue() {
        let hub = EventHub::new(2);
        let mut slow = hub.subscribe().unwrap();
        let mut fast = hub.subscribe().unwrap();
        for n in 0..3 {
            hub.publish(&n);
            assert_eq!(fast.next().await, Some(Ok(n)));
        }
        // The slow one had room for two; the third dropped it.
        assert_eq!(slow.next().await, Some(Ok(0)));
        assert_eq!(slow.next().await, Some(Ok(1)));
        assert_eq!(slow.next().await, Some(Err(EventError::Lagged(2))));
        assert_eq!(slow.next().await, None);
        hub.publish(&3);
        assert_eq!(fast.next().await, Some(Ok(3)));
        assert_eq!(hub.subscribers(), 1);
    }

    #[tokio::test]
    async fn gone_subscribers_are_forgotten_and_the_number_is_bounded() {
        let hub = EventHub::<u32>::new(1);
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| hub.subscribe().unwrap())
            .collect();
        assert_eq!(hub.subscribe().err(), Some(EventError::TooManySubscribers));
        drop(subs);
        assert!(hub.subscribe().is_ok());
        hub.drop_all();
        assert_eq!(hub.subscribers(), 0);
    }
}
