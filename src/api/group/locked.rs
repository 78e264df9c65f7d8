//! `Locked<T>`: a value behind the crate's standalone [`Lock`], the group's
//! small mutex (a spin-lock bit with `std`, a critical section without).
//!
//! Closures passed to [`Locked::with`] run with the lock held: they only
//! move plain data (counts, results, wakers) and never call user code or
//! take the same lock again, so neither back-end can deadlock on them and an
//! interrupt handler waits at most for one of them.

use crate::raw::lock::Lock;
use crate::raw::sync::UnsafeCell;

pub(crate) struct Locked<T> {
    lock: Lock,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through `with`, under `lock`, so at most
// one thread touches it at a time; moving a `T` to another thread that way
// needs `T: Send`, exactly as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for Locked<T> {}
// SAFETY: as above; owning a `Locked<T>` is owning a `T`.
unsafe impl<T: Send> Send for Locked<T> {}

impl<T> Locked<T> {
    pub(crate) fn new(value: T) -> Locked<T> {
        Locked {
            lock: Lock::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value with the lock held. `f` must not call `with`
    /// on the same `Locked` (the spin lock is not re-entrant).
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held until `_guard` drops, after `f` returns
        // (or unwinds), so this is the only reference to the value.
        self.value.with_mut(|v| f(unsafe { &mut *v }))
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::Locked;

    #[test]
    fn with_gives_exclusive_access_and_returns_the_closure_value() {
        let l = Locked::new(1u32);
        assert_eq!(
            l.with(|v| {
                *v += 1;
                *v
            }),
            2
        );
        assert_eq!(l.with(|v| *v), 2);
    }

    #[cfg(feature = "std")]
    #[test]
    fn threads_do_not_lose_updates() {
        let l = std::sync::Arc::new(Locked::new(0u64));
        let n = if cfg!(miri) { 20 } else { 5_000 };
        let threads: std::vec::Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..n {
                        l.with(|v| *v += 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.with(|v| *v), 3 * n);
    }
}
