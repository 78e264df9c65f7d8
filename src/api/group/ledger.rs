//! `Ledger`: the bookkeeping every form of group shares. How many tasks
//! run, the limit, the first error (sticky for the group's life, as Go's
//! errgroup keeps it), the first abnormal ending (a panic, or a task its
//! executor dropped), and the results waiting for `wait` or `collect`.
//!
//! It never touches the context: `record` says which cause to cancel with
//! and the caller cancels, outside any lock. A finished task is recorded in
//! two steps so that a waiter can never see "all finished" before the
//! failing task's cancel: [`record`](Ledger::record) (result and first
//! error), the caller's cancel, then [`release`](Ledger::release) (the
//! slot).

use alloc::vec::Vec;

use crate::Cause;
use crate::api::group::ending::Ended;
use crate::api::group::ending::TaskDropped;
#[cfg(feature = "std")]
use crate::api::group::ending::{Payload, TaskPanicked};

/// A task ended without returning: what the group's wait re-raises.
pub(crate) enum Abnormal {
    #[cfg(feature = "std")]
    Panicked(Payload),
    Dropped,
}

impl Abnormal {
    /// Re-raises it on the waiting thread: the panic itself, or a panic
    /// saying a task was dropped unfinished.
    pub(crate) fn raise(self) -> ! {
        match self {
            #[cfg(feature = "std")]
            Abnormal::Panicked(payload) => std::panic::resume_unwind(payload),
            Abnormal::Dropped => panic!("{}", TaskDropped),
        }
    }
}

pub(crate) struct Ledger<T, E> {
    /// Tasks admitted and not yet released.
    running: usize,
    /// At most this many running (`None`: no limit).
    limit: Option<usize>,
    /// The first error any task returned; kept for the group's whole life.
    first: Option<E>,
    /// The first task that ended without returning; taken by the wait that
    /// re-raises it.
    abnormal: Option<Abnormal>,
    /// One slot per task admitted since the last drain, in the order they
    /// were admitted; a slot is filled when its task returns.
    results: Vec<Option<Result<T, E>>>,
    /// The key of `results[0]`.
    base: usize,
}

impl<T, E> Ledger<T, E> {
    pub(crate) const fn new() -> Ledger<T, E> {
        Ledger {
            running: 0,
            limit: None,
            first: None,
            abnormal: None,
            results: Vec::new(),
            base: 0,
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    pub(crate) fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Sets the limit; `true` if it now admits more tasks than before (so
    /// waiting adders should look again).
    pub(crate) fn set_limit(&mut self, limit: Option<usize>) -> bool {
        let raised = match (self.limit, limit) {
            (_, None) => self.limit.is_some(),
            (None, Some(_)) => false,
            (Some(old), Some(new)) => new > old,
        };
        self.limit = limit;
        raised
    }

    /// `true` if another task may start now.
    pub(crate) fn has_room(&self) -> bool {
        self.limit.is_none_or(|l| self.running < l)
    }

    /// Counts a new task as running; returns its key (its place in the
    /// results).
    pub(crate) fn admit(&mut self) -> usize {
        self.running += 1;
        let key = self.base + self.results.len();
        self.results.push(None);
        key
    }

    /// Frees the finished task's slot; `true` if no task runs any more.
    pub(crate) fn release(&mut self) -> bool {
        self.running = self.running.saturating_sub(1);
        self.running == 0
    }

    /// The first abnormal ending not yet re-raised.
    pub(crate) fn take_abnormal(&mut self) -> Option<Abnormal> {
        self.abnormal.take()
    }

    /// Forgets the results of every task admitted so far (all finished).
    pub(crate) fn discard_results(&mut self) {
        self.base += self.results.len();
        self.results.clear();
    }

    /// The results of every task admitted since the last drain, in the
    /// order they were admitted (all finished). A task that ended without
    /// returning has none (and its wait re-raises that first).
    pub(crate) fn take_results(&mut self) -> Vec<Result<T, E>> {
        self.base += self.results.len();
        core::mem::take(&mut self.results)
            .into_iter()
            .flatten()
            .collect()
    }
}

impl<T, E: Clone + Into<Cause>> Ledger<T, E> {
    /// Records how the task `key` ended; returns the cause to cancel the
    /// group's context with, if this is the group's first error or first
    /// abnormal ending. The caller cancels, then calls `release`.
    pub(crate) fn record(&mut self, key: usize, ended: Ended<Result<T, E>>) -> Option<Cause> {
        let mut cause = None;
        let result = match ended {
            Ended::Returned(Ok(v)) => Some(Ok(v)),
            Ended::Returned(Err(e)) => {
                if self.first.is_none() {
                    self.first = Some(e.clone());
                    cause = Some(e.clone().into());
                }
                Some(Err(e))
            }
            #[cfg(feature = "std")]
            Ended::Panicked(payload) => {
                if self.abnormal.is_none() {
                    cause = Some(Cause::new(TaskPanicked::new(&payload)));
                    self.abnormal = Some(Abnormal::Panicked(payload));
                }
                None
            }
            Ended::Dropped => {
                if self.abnormal.is_none() {
                    cause = Some(Cause::new(TaskDropped));
                    self.abnormal = Some(Abnormal::Dropped);
                }
                None
            }
        };
        // Every key is in range (a drain waits until no task runs, so no
        // task outlives its round); the lookup stays total anyway.
        if let Some(slot) = key
            .checked_sub(self.base)
            .and_then(|i| self.results.get_mut(i))
        {
            *slot = result;
        }
        cause
    }

    /// The group's first error, if any task ever failed.
    pub(crate) fn first_error(&self) -> Result<(), E> {
        match &self.first {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn the_first_error_is_sticky_and_causes_once() {
        let mut l = Ledger::<u8, Error>::new();
        let (a, b, c) = (l.admit(), l.admit(), l.admit());
        assert_eq!(l.running(), 3);
        assert!(
            l.record(b, Ended::Returned(Err(Error::DeadlineExceeded)))
                .is_some()
        );
        assert!(!l.release());
        assert!(l.record(a, Ended::Returned(Err(Error::Canceled))).is_none());
        assert!(!l.release());
        assert!(l.record(c, Ended::Returned(Ok(7))).is_none());
        assert!(l.release(), "no task runs");
        assert_eq!(l.first_error(), Err(Error::DeadlineExceeded));
        assert_eq!(
            l.take_results(),
            [Err(Error::Canceled), Err(Error::DeadlineExceeded), Ok(7)]
        );
        // A new round: keys continue, the first error stays.
        let d = l.admit();
        assert!(l.record(d, Ended::Returned(Ok(1))).is_none());
        l.release();
        assert_eq!(l.take_results(), [Ok(1)]);
        assert_eq!(l.first_error(), Err(Error::DeadlineExceeded));
    }

    #[test]
    fn the_limit_admits_and_reports_raises() {
        let mut l = Ledger::<(), Error>::new();
        assert!(!l.set_limit(Some(1)));
        assert!(l.has_room());
        let k = l.admit();
        assert!(!l.has_room());
        assert!(!l.set_limit(Some(0)), "lowering admits nothing new");
        assert!(l.set_limit(Some(2)));
        assert!(l.has_room());
        assert!(l.set_limit(None));
        assert!(!l.set_limit(None));
        l.record(k, Ended::Returned(Ok(())));
        l.release();
        l.discard_results();
        assert!(l.take_results().is_empty());
    }

    #[test]
    fn a_dropped_task_causes_once_and_leaves_no_result() {
        let mut l = Ledger::<(), Error>::new();
        let (a, b) = (l.admit(), l.admit());
        let cause = l.record(a, Ended::Dropped).expect("first abnormal ending");
        assert!(cause.downcast_ref::<TaskDropped>().is_some());
        assert!(l.record(b, Ended::Dropped).is_none());
        l.release();
        l.release();
        assert!(matches!(l.take_abnormal(), Some(Abnormal::Dropped)));
        assert!(l.take_abnormal().is_none());
        assert!(l.take_results().is_empty());
    }
}
