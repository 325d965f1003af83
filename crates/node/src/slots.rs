//! Upload slots: which waiting request gets the next free one.
//!
//! A node uploads a few pieces at a time (each holds its slot until the peer
//! has every byte), lets as many more wait, and answers `Busy` past that, so
//! the asker turns to another holder. Requests from another datacenter wait
//! in a queue of their own and get a free slot first: a piece sent across is
//! the one copy a whole datacenter waits for, where a neighbour asking for it
//! has other holders nearby. With one shared queue, a host that had just
//! taken a new chunk from the seed was asked for it by dozens of neighbours
//! at once, and the hosts of other datacenters assigned to carry it across
//! were told `Busy` again and again; in the flow model at 1,000 hosts this
//! left one datacenter in three runs seconds behind (docs/netsim.md). A
//! request from this datacenter that has waited [`LOCAL_WAIT_MAX`] goes
//! first, so a stream of requests from across cannot starve it into the
//! asker's request timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The longest a request from this datacenter waits behind requests from
/// across before it is served first.
pub const LOCAL_WAIT_MAX: Duration = Duration::from_secs(1);

/// Whose request: its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// From a host of another datacenter: served first.
    Cross,
    Local,
}

pub struct UploadSlots {
    /// Slots, and how many requests of each class may wait for one.
    slots: usize,
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Waiters by class, `Cross` then `Local`, with when each began to
    /// wait and whether its host said it is full. A slot is handed to a
    /// waiter by sending on its channel.
    queues: [VecDeque<Waiter>; 2],
}

struct Waiter {
    at: Instant,
    full: Arc<AtomicBool>,
    tx: oneshot::Sender<()>,
}

/// A slot, given back on drop.
pub struct Permit<'a>(&'a UploadSlots);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A waiter's place: if it is dropped after a slot was handed to it (the
/// request was cancelled at that moment), the slot goes on to the next.
struct Place<'a> {
    slots: &'a UploadSlots,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

impl UploadSlots {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        UploadSlots {
            slots,
            state: Mutex::new(State {
                free: slots,
                queues: [VecDeque::new(), VecDeque::new()],
            }),
        }
    }

    /// A slot for a request of `class`: at once, after the requests ahead of
    /// it, or `None` (answer `Busy`) when as many of its class already wait
    /// as there are slots. `full`: whether the asker says it is full (see
    /// `release`), read when a slot frees.
    pub async fn acquire(&self, class: Class, full: Arc<AtomicBool>) -> Option<Permit<'_>> {
        let rx = {
            let mut st = self.state.lock().expect("slots lock");
            if st.free > 0 {
                st.free -= 1;
                return Some(Permit(self));
            }
            let q = &mut st.queues[class as usize];
            // Waiters whose request was cancelled leave no trace but a closed channel.
            q.retain(|w| !w.tx.is_closed());
            if q.len() >= self.slots {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            q.push_back(Waiter {
                at: Instant::now(),
                full,
                tx,
            });
            rx
        };
        let mut place = Place {
            slots: self,
            rx: Some(rx),
        };
        let got = place.rx.as_mut().expect("set above").await;
        place.rx = None;
        got.ok().map(|()| Permit(self))
    }

    /// Hands a freed slot to the first live waiter: from across first,
    /// unless a local one has waited too long; of a class, the first whose
    /// host has room, or the first if every one is full. A host that is
    /// full gains nothing from one more piece at once, and the slot would
    /// send at its crawl while a host with room waits (`Msg::Full`).
    fn release(&self) {
        let mut st = self.state.lock().expect("slots lock");
        for q in &mut st.queues {
            q.retain(|w| !w.tx.is_closed());
        }
        let local = Class::Local as usize;
        let overdue = st.queues[local]
            .front()
            .is_some_and(|w| w.at.elapsed() >= LOCAL_WAIT_MAX);
        let order = if overdue {
            [Class::Local, Class::Cross]
        } else {
            [Class::Cross, Class::Local]
        };
        for class in order {
            let q = &mut st.queues[class as usize];
            while !q.is_empty() {
                let i = q
                    .iter()
                    .position(|w| !w.full.load(Ordering::Relaxed))
                    .unwrap_or(0);
                let w = q.remove(i).expect("in range");
                if w.tx.send(()).is_ok() {
                    return;
                }
            }
        }
        st.free += 1;
    }

    /// Requests waiting for a slot now (both classes).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        let st = self.state.lock().expect("slots lock");
        st.queues
            .iter()
            .map(|q| q.iter().filter(|w| !w.tx.is_closed()).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn room() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[tokio::test]
    async fn a_host_with_room_gets_the_slot_before_a_full_one() {
        let slots = Arc::new(UploadSlots::new(1));
        let held = slots.acquire(Class::Local, room()).await.expect("free");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let full = Arc::new(AtomicBool::new(false));
        for (name, flag) in [("full", full.clone()), ("room", room())] {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let p = slots.acquire(Class::Local, flag).await;
                tx.send(name).expect("receiver alive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The first waiter says it is full after it queued: read at release.
        full.store(true, Ordering::Relaxed);
        drop(held);
        assert_eq!(rx.recv().await, Some("room"));
        // With only full hosts waiting, the first of them is served.
        assert_eq!(rx.recv().await, Some("full"));
    }

    #[tokio::test]
    async fn a_request_from_across_gets_the_next_slot_first() {
        let slots = Arc::new(UploadSlots::new(1));
        let held = slots
            .acquire(Class::Local, room())
            .await
            .expect("a free slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for class in [Class::Local, Class::Cross] {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let p = slots.acquire(class, room()).await;
                tx.send(class).expect("receiver alive");
                drop(p);
            });
            // The local request queues first.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(slots.waiting(), 2);
        drop(held);
        assert_eq!(rx.recv().await, Some(Class::Cross));
        assert_eq!(rx.recv().await, Some(Class::Local));
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_request_that_waited_long_goes_first() {
        let slots = Arc::new(UploadSlots::new(1));
        let held = slots
            .acquire(Class::Local, room())
            .await
            .expect("a free slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let spawn = |class| {
            let (slots, tx) = (slots.clone(), tx.clone());
            tokio::spawn(async move {
                let p = slots.acquire(class, room()).await;
                tx.send(class).expect("receiver alive");
                drop(p);
            });
        };
        spawn(Class::Local);
        tokio::time::sleep(LOCAL_WAIT_MAX).await;
        spawn(Class::Cross);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert_eq!(rx.recv().await, Some(Class::Local));
        assert_eq!(rx.recv().await, Some(Class::Cross));
    }

    #[tokio::test]
    async fn each_class_is_busy_past_its_own_queue() {
        let slots = Arc::new(UploadSlots::new(2));
        let _a = slots.acquire(Class::Local, room()).await.expect("free");
        let _b = slots.acquire(Class::Local, room()).await.expect("free");
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let s = slots.clone();
            waiters.push(tokio::spawn(async move {
                s.acquire(Class::Local, room()).await.is_some()
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            slots.acquire(Class::Local, room()).await.is_none(),
            "a third local waiter is told Busy"
        );
        // Across has a queue of its own.
        let s = slots.clone();
        let cross = tokio::spawn(async move { s.acquire(Class::Cross, room()).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(slots.waiting(), 3);
        drop((_a, _b));
        assert!(cross.await.expect("no panic"));
        for w in waiters {
            assert!(w.await.expect("no panic"));
        }
    }

    #[tokio::test]
    async fn a_cancelled_waiter_passes_its_slot_on() {
        let slots = Arc::new(UploadSlots::new(1));
        let held = slots.acquire(Class::Local, room()).await.expect("free");
        let s = slots.clone();
        let gone = tokio::spawn(async move { s.acquire(Class::Cross, room()).await.map(|_| ()) });
        let s = slots.clone();
        let next = tokio::spawn(async move { s.acquire(Class::Local, room()).await.is_some() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert!(
            next.await.expect("no panic"),
            "the slot reached the next waiter"
        );
        // Every slot came back.
        assert!(slots.acquire(Class::Local, room()).await.is_some());
    }
}
