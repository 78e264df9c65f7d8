//! `Waiters`: the wakers of futures waiting on a spawned group (for a free
//! slot, or for every task to finish), kept under the group's lock.
//!
//! A waiter holds a `Ticket` for its place. `take_all` empties the list
//! and starts a new round, which spends every ticket: a woken waiter that
//! is still not satisfied registers again. Wakers are cloned, woken and
//! dropped by the callers outside the lock (they are user code); the list
//! only moves them.

use alloc::vec::Vec;
use core::task::Waker;

/// A waiter's place in one round of the list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    round: usize,
    index: usize,
}

pub(crate) struct Waiters {
    wakers: Vec<Option<Waker>>,
    /// Places emptied by `cancel` in this round, reused by `register`.
    vacant: Vec<usize>,
    round: usize,
}

/// Wakers taken out of the list, to wake once the lock is released.
#[must_use = "wake them"]
pub(crate) struct Woken(Vec<Option<Waker>>);

impl Woken {
    pub(crate) fn wake(self) {
        for w in self.0.into_iter().flatten() {
            w.wake();
        }
    }
}

impl Waiters {
    pub(crate) const fn new() -> Waiters {
        Waiters {
            wakers: Vec::new(),
            vacant: Vec::new(),
            round: 0,
        }
    }

    fn place(&mut self, ticket: Option<Ticket>) -> Option<&mut Option<Waker>> {
        let t = ticket.filter(|t| t.round == self.round)?;
        self.wakers.get_mut(t.index)
    }

    /// Stores `waker` in the ticket's place, or in a new one (the ticket is
    /// updated). Returns the waker it replaced, to drop outside the lock.
    pub(crate) fn register(&mut self, ticket: &mut Option<Ticket>, waker: Waker) -> Option<Waker> {
        if let Some(place) = self.place(*ticket) {
            return place.replace(waker);
        }
        let index = match self.vacant.pop() {
            Some(i) => {
                self.wakers[i] = Some(waker);
                i
            }
            None => {
                self.wakers.push(Some(waker));
                self.wakers.len() - 1
            }
        };
        *ticket = Some(Ticket {
            round: self.round,
            index,
        });
        None
    }

    /// Gives up the ticket's place (its future is satisfied or dropped).
    /// Returns the waker that was there, to drop outside the lock.
    pub(crate) fn cancel(&mut self, ticket: &mut Option<Ticket>) -> Option<Waker> {
        let t = ticket.take();
        let index = t.map(|t| t.index);
        let old = self.place(t).and_then(Option::take);
        if let (Some(_), Some(i)) = (&old, index) {
            self.vacant.push(i);
        }
        old
    }

    /// Takes every waker and spends every ticket.
    pub(crate) fn take_all(&mut self) -> Woken {
        self.round = self.round.wrapping_add(1);
        self.vacant.clear();
        Woken(core::mem::take(&mut self.wakers))
    }

    /// `true` if nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.wakers.len() == self.vacant.len()
    }
}

#[cfg(all(test, feature = "std", not(cancel_tree_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn register_replaces_in_place_and_take_all_spends_tickets() {
        let mut w = Waiters::new();
        let (a, wa) = waker();
        let (b, wb) = waker();
        let mut ta = None;
        let mut tb = None;
        assert!(w.register(&mut ta, wa.clone()).is_none());
        assert!(w.register(&mut ta, wa.clone()).is_some(), "same place");
        assert!(w.register(&mut tb, wb).is_none());
        assert!(!w.is_empty());
        w.take_all().wake();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(w.is_empty());
        assert!(w.cancel(&mut ta).is_none(), "a spent ticket has no place");
        assert!(w.register(&mut ta, wa).is_none(), "a new place");
        assert_eq!(w.wakers.len(), 1);
    }

    #[test]
    fn cancelled_places_are_reused() {
        let mut w = Waiters::new();
        let (_, wa) = waker();
        for _ in 0..10 {
            let mut t = None;
            assert!(w.register(&mut t, wa.clone()).is_none());
            assert!(w.cancel(&mut t).is_some());
            assert!(t.is_none());
        }
        assert_eq!(w.wakers.len(), 1, "one place, reused");
        assert!(w.is_empty());
        w.take_all().wake();
    }
}
