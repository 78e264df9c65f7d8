//! A minimal `Arc` on the crate's atomics.
//!
//! `alloc::sync::Arc` does not exist on targets without compare-and-swap
//! (thumbv6m, riscv32imc), where our atomics come from portable-atomic; this
//! one works everywhere and is modelled by loom. It has just what the crate
//! needs: shared ownership, and thin raw pointers to store in nodes.

use alloc::boxed::Box;
use core::ops::Deref;
use core::ptr::NonNull;

use crate::raw::sync::{AtomicUsize, Ordering, acquire_after_last_release};

/// The top bit of the count: set once the count saturates.
const IMMORTAL: usize = 1 << (usize::BITS - 1);

struct Inner<T> {
    refs: AtomicUsize,
    value: T,
}

/// A shared, reference-counted `T`.
pub(crate) struct Arc<T> {
    ptr: NonNull<Inner<T>>,
}

// SAFETY: like std's Arc: shared `&T` across threads needs `T: Sync`, and
// the last owner may drop `T` on any thread, so `T: Send`.
unsafe impl<T: Send + Sync> Send for Arc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Arc<T> {}

impl<T> Arc<T> {
    pub(crate) fn new(value: T) -> Arc<T> {
        let b = Box::new(Inner {
            refs: AtomicUsize::new(1),
            value,
        });
        Arc {
            ptr: NonNull::from(Box::leak(b)),
        }
    }

    /// Gives up this reference as a thin raw pointer.
    pub(crate) fn into_raw(this: Arc<T>) -> *const () {
        let p = this.ptr.as_ptr().cast_const().cast();
        core::mem::forget(this);
        p
    }

    /// Takes back a reference given up by [`Arc::into_raw`].
    ///
    /// # Safety
    /// `raw` came from `Arc::<T>::into_raw`, and that reference is taken back
    /// once.
    pub(crate) unsafe fn from_raw(raw: *const ()) -> Arc<T> {
        // SAFETY: non-null, from `into_raw` (caller).
        let ptr = unsafe { NonNull::new_unchecked(raw.cast_mut().cast()) };
        Arc { ptr }
    }

    /// A new reference from a raw pointer whose reference someone else owns.
    ///
    /// # Safety
    /// `raw` came from `Arc::<T>::into_raw` and that reference is alive.
    pub(crate) unsafe fn clone_raw(raw: *const ()) -> Arc<T> {
        // SAFETY: (caller); `ManuallyDrop` leaves the owner's count alone.
        let borrowed = core::mem::ManuallyDrop::new(unsafe { Arc::<T>::from_raw(raw) });
        Arc::clone(&borrowed)
    }

    pub(crate) fn ptr_eq(a: &Arc<T>, b: &Arc<T>) -> bool {
        a.ptr == b.ptr
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: we hold a reference, so the allocation is alive.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Deref for Arc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Clone for Arc<T> {
    fn clone(&self) -> Arc<T> {
        let prev = self.inner().refs.fetch_add(1, Ordering::Relaxed);
        if prev >= IMMORTAL / 2 {
            // A count this high means clones are being leaked in a loop
            // (std aborts here). Make the allocation immortal instead: with
            // the top bit set the count can never come back down to 1, so it
            // is leaked, never freed early.
            self.inner().refs.fetch_or(IMMORTAL, Ordering::Relaxed);
        }
        Arc { ptr: self.ptr }
    }
}

impl<T> Drop for Arc<T> {
    fn drop(&mut self) {
        if self.inner().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        acquire_after_last_release(&self.inner().refs);
        // SAFETY: last reference; made by `Box::into_raw` in `new`.
        unsafe { drop(Box::from_raw(self.ptr.as_ptr())) }
    }
}
