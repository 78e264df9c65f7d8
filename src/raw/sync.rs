//! The one place that decides which atomics and cells the crate uses.
//!
//! * `cfg(cancel_tree_loom)`: loom's model-checked atomics and cells (see
//!   `tests/loom.rs`).
//! * feature `portable-atomic`: portable-atomic's types, which fall back to
//!   critical sections on targets without compare-and-swap (thumbv6m,
//!   riscv32imc).
//! * otherwise: `core::sync::atomic`.
//!
//! [`UnsafeCell`] has loom's closure-based API in every configuration, so the
//! same code runs under loom and in production.
#![cfg_attr(not(feature = "alloc"), allow(dead_code, unused_imports))]

#[cfg(cancel_tree_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering, fence};

#[cfg(all(not(cancel_tree_loom), feature = "portable-atomic"))]
pub(crate) use portable_atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering, fence};

#[cfg(all(not(cancel_tree_loom), not(feature = "portable-atomic")))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering, fence};

#[cfg(cancel_tree_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` with loom's `with` / `with_mut` API.
#[cfg(not(cancel_tree_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(cancel_tree_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Declares a constructor `const` except under loom, whose atomics and
/// cells have no `const fn new`: one body for both.
macro_rules! const_unless_loom {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(cancel_tree_loom))]
        $(#[$m])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(cancel_tree_loom)]
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_unless_loom;

/// After a `Release` decrement that took a count to its end: makes every
/// other owner's uses of the object happen before the caller frees it
/// (pairs with their `Release` decrements).
///
/// An `Acquire` fence, except for the ThreadSanitizer run
/// (`--cfg cancel_tree_tsan`), which models loads but not fences and gets
/// an `Acquire` load of the count instead: the same guarantee through the
/// release sequence.
#[inline(always)]
pub(crate) fn acquire_after_last_release(count: &AtomicUsize) {
    #[cfg(not(cancel_tree_tsan))]
    {
        let _ = count;
        fence(Ordering::Acquire);
    }
    #[cfg(cancel_tree_tsan)]
    count.load(Ordering::Acquire);
}

/// One step of a bounded spin: a CPU hint, and after a while a yield to the
/// OS scheduler (std) or to loom's scheduler.
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(cancel_tree_loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(cancel_tree_loom))]
    {
        *spins = spins.saturating_add(1);
        if *spins < 64 {
            core::hint::spin_loop();
        } else {
            #[cfg(feature = "std")]
            std::thread::yield_now();
            #[cfg(not(feature = "std"))]
            core::hint::spin_loop();
        }
    }
}
