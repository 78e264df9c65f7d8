//! The lock back-end. This module is the one switch between the two ways
//! the crate locks; the rest of the code calls [`Guard`] (a lock that is a
//! bit of some atomic word) or [`Lock`] (a word that is only a lock), and
//! branches on [`IN_WORD`] in ordinary code.
//!
//! * **With `std`**: a spin lock on one bit of an atomic word. Locking is a
//!   `fetch_or` (`Acquire`, pairs with the `Release` of the unlocking RMW);
//!   a waiter spins 64 times, then yields to the OS. Because the lock is a
//!   bit, an owner may fold its unlock into another RMW of the same word
//!   ([`Guard::unlock_with`]), and code that finds the bit clear in a word
//!   may act on that word without the lock (the tree's lock-free endings).
//! * **Without `std`**: a critical section (the `critical-section` crate;
//!   interrupts masked on a single-core MCU). An interrupt handler can then
//!   never find the lock held by the code it interrupted, so it never waits
//!   on it. The bit is not used: nothing can run lock-free beside a holder,
//!   so every path takes the section.
//!
//! Critical sections nest in LIFO order: guards are scoped values, dropped
//! in the reverse order of their creation, as `critical-section` requires.

use crate::raw::sync::{AtomicUsize, Ordering};

/// `true` when the lock is a bit of the word it guards (`std`). Then:
/// lock-free paths that read the bit are possible, and a thread that loses a
/// race may wait for the winner (a critical section's winner may be the
/// code an interrupt handler interrupted, which cannot run until it returns).
pub(crate) const IN_WORD: bool = cfg!(feature = "std");

/// Proof that the lock which is bit `BIT` of `word` is held. Dropping it
/// unlocks (clears the bit, or leaves the critical section).
#[must_use]
pub(crate) struct Guard<'a, const BIT: usize> {
    word: &'a AtomicUsize,
    #[cfg(not(feature = "std"))]
    restore: critical_section::RestoreState,
}

impl<'a, const BIT: usize> Guard<'a, BIT> {
    /// Takes the lock; also returns the word as seen under it (`BIT` set
    /// when [`IN_WORD`]).
    #[inline]
    pub(crate) fn lock(word: &'a AtomicUsize) -> (Guard<'a, BIT>, usize) {
        #[cfg(feature = "std")]
        {
            let mut spins = 0;
            loop {
                if let Some(locked) = Guard::try_lock(word) {
                    return locked;
                }
                while word.load(Ordering::Relaxed) & BIT != 0 {
                    crate::raw::sync::backoff(&mut spins);
                }
            }
        }
        #[cfg(not(feature = "std"))]
        {
            // SAFETY: the matching `release` runs when the guard ends
            // (`Drop` or `unlock_with`), exactly once.
            let restore = unsafe { critical_section::acquire() };
            let seen = word.load(Ordering::Acquire);
            (Guard { word, restore }, seen)
        }
    }

    /// [`lock`](Guard::lock) without waiting: `None` if another thread
    /// holds the bit. A critical section is always taken (never `None`).
    #[inline]
    pub(crate) fn try_lock(word: &'a AtomicUsize) -> Option<(Guard<'a, BIT>, usize)> {
        #[cfg(feature = "std")]
        {
            // Acquire: pairs with the Release of the previous holder's unlock.
            let prev = word.fetch_or(BIT, Ordering::Acquire);
            if prev & BIT == 0 {
                Some((Guard { word }, prev | BIT))
            } else {
                None
            }
        }
        #[cfg(not(feature = "std"))]
        Some(Guard::lock(word))
    }

    /// Unlocks through `rmw`, one read-modify-write of the word that must
    /// also clear the lock bit it is given (`BIT` when [`IN_WORD`], 0 for a
    /// critical section, which is left after `rmw`). It must use `Release`
    /// (the unlock's half of the pair with [`lock`](Guard::lock)'s
    /// `Acquire`). Returns what `rmw` returned.
    #[inline(always)]
    pub(crate) fn unlock_with<R>(self, rmw: impl FnOnce(&AtomicUsize, usize) -> R) -> R {
        let this = core::mem::ManuallyDrop::new(self);
        let out = rmw(this.word, if IN_WORD { BIT } else { 0 });
        #[cfg(not(feature = "std"))]
        // SAFETY: `restore` came from the `acquire` in `lock`; the guard is
        // not dropped (ManuallyDrop), so this is its only release.
        unsafe {
            critical_section::release(this.restore)
        };
        out
    }
}

impl<const BIT: usize> Drop for Guard<'_, BIT> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "std")]
        // Release: pairs with the next holder's Acquire in `lock`.
        self.word.fetch_and(!BIT, Ordering::Release);
        #[cfg(not(feature = "std"))]
        // SAFETY: `restore` came from the `acquire` in `lock`, and this is
        // its only release.
        unsafe {
            critical_section::release(self.restore)
        }
    }
}

/// A word that is only a lock (bit 0), for data that has no state word of
/// its own: a timer queue, a clock's time.
pub(crate) struct Lock(AtomicUsize);

impl Lock {
    crate::raw::sync::const_unless_loom! {
        pub(crate) fn new() -> Lock {
            Lock(AtomicUsize::new(0))
        }
    }

    /// Takes the lock.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_, 1> {
        Guard::lock(&self.0).0
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lock_sets_and_clears_the_bit_and_keeps_other_bits() {
        let w = AtomicUsize::new(0b1000);
        let (g, seen) = Guard::<'_, 1>::lock(&w);
        assert_eq!(seen & 0b1000, 0b1000);
        if IN_WORD {
            assert_eq!(seen & 1, 1);
            assert!(Guard::<'_, 1>::try_lock(&w).is_none(), "a held bit is busy");
        }
        drop(g);
        assert_eq!(w.load(Ordering::Relaxed), 0b1000);
        assert!(Guard::<'_, 1>::try_lock(&w).is_some());
        assert_eq!(
            w.load(Ordering::Relaxed),
            0b1000,
            "the guard unlocked on drop"
        );
    }

    #[test]
    fn unlock_with_folds_the_unlock_into_one_rmw() {
        let w = AtomicUsize::new(0);
        let (g, _) = Guard::<'_, 1>::lock(&w);
        let prev = g.unlock_with(|w, bit| w.fetch_xor(0b100 | bit, Ordering::Release));
        assert_eq!(prev & !1, 0);
        assert_eq!(w.load(Ordering::Relaxed), 0b100, "bits set, lock bit clear");
    }

    #[cfg(feature = "std")]
    #[test]
    fn lock_excludes_other_threads() {
        use std::sync::Arc;
        struct Shared {
            lock: Lock,
            count: core::cell::UnsafeCell<u64>,
        }
        // SAFETY: `count` is only touched under `lock`.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared {
            lock: Lock::new(),
            count: core::cell::UnsafeCell::new(0),
        });
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..if cfg!(miri) { 50 } else { 10_000 } {
                        let _g = s.lock.lock();
                        // SAFETY: the lock is held.
                        unsafe { *s.count.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _g = s.lock.lock();
        // SAFETY: the lock is held.
        let count = unsafe { *s.count.get() };
        assert_eq!(count, if cfg!(miri) { 200 } else { 40_000 });
    }
}
