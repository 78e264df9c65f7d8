//! A small per-thread cache of freed scope nodes (with `std`).
//!
//! A child scope is one 64-byte allocation; creating and dropping one is a
//! few atomic operations, so the allocator's malloc + free is the largest
//! single cost of a short-lived child. Each thread keeps up to [`CAP`] freed
//! scope blocks and reuses them for its next children. The blocks come from
//! and go back to the global allocator with the layout of [`Scope`], exactly
//! as a `Box<Scope>` would; a block freed on another thread simply joins that
//! thread's cache. When a thread exits, its cache is returned to the
//! allocator. So memory stays O(live nodes) plus at most `CAP` blocks per
//! thread that ever dropped a scope.
//!
//! Without `std` (no thread-locals) and under loom, nodes are plain boxes.

#[cfg(not(all(feature = "std", not(cancel_tree_loom))))]
use alloc::boxed::Box;

use crate::tree::node::Scope;

/// Freed blocks kept per thread (2 KiB of 64-byte nodes).
#[cfg(all(feature = "std", not(cancel_tree_loom)))]
pub(crate) const CAP: usize = 32;

#[cfg(all(feature = "std", not(cancel_tree_loom)))]
mod imp {
    use core::cell::Cell;
    use core::ptr;
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};

    use super::CAP;
    use crate::tree::node::Scope;

    /// A cached block: its first word links to the next one.
    struct FreeBlock {
        next: *mut FreeBlock,
    }

    const LAYOUT: Layout = Layout::new::<Scope>();
    const _: () = assert!(LAYOUT.size() >= size_of::<FreeBlock>());
    const _: () = assert!(LAYOUT.align() >= align_of::<FreeBlock>());

    struct Cache {
        head: Cell<*mut FreeBlock>,
        len: Cell<usize>,
    }

    impl Drop for Cache {
        fn drop(&mut self) {
            self.trim();
        }
    }

    impl Cache {
        fn trim(&self) {
            self.len.set(0);
            let mut p = self.head.replace(ptr::null_mut());
            while !p.is_null() {
                // SAFETY: every listed block is a live allocation of LAYOUT
                // owned by this cache, whose first word is the link.
                unsafe {
                    let next = (*p).next;
                    dealloc(p.cast(), LAYOUT);
                    p = next;
                }
            }
        }
    }

    std::thread_local! {
        static CACHE: Cache = const {
            Cache { head: Cell::new(ptr::null_mut()), len: Cell::new(0) }
        };
    }

    /// Returns this thread's cached blocks to the allocator.
    pub(super) fn trim() {
        let _ = CACHE.try_with(Cache::trim);
    }

    /// A block for one `Scope`: from this thread's cache, or the allocator.
    #[inline]
    pub(super) fn alloc_block() -> *mut Scope {
        let cached = CACHE
            .try_with(|c| {
                let p = c.head.get();
                if !p.is_null() {
                    // SAFETY: a listed block (see `Drop`).
                    c.head.set(unsafe { (*p).next });
                    c.len.set(c.len.get() - 1);
                }
                p
            })
            .unwrap_or(ptr::null_mut());
        if !cached.is_null() {
            return cached.cast();
        }
        // SAFETY: LAYOUT has a non-zero size.
        let p = unsafe { alloc(LAYOUT) };
        if p.is_null() {
            handle_alloc_error(LAYOUT);
        }
        p.cast()
    }

    /// Gives a block back: to this thread's cache, or (cache full, or the
    /// thread is exiting) to the allocator.
    ///
    /// # Safety
    /// `p` is an allocation of `LAYOUT` whose contents need no drop, owned by
    /// the caller and used by nobody else from now on.
    #[inline]
    pub(super) unsafe fn free_block(p: *mut Scope) {
        let block = p.cast::<FreeBlock>();
        let kept = CACHE
            .try_with(|c| {
                if c.len.get() >= CAP {
                    return false;
                }
                // SAFETY: the block is ours (caller) and large enough.
                unsafe { block.write(FreeBlock { next: c.head.get() }) };
                c.head.set(block);
                c.len.set(c.len.get() + 1);
                true
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: (caller) an allocation of LAYOUT.
            unsafe { dealloc(p.cast(), LAYOUT) };
        }
    }
}

/// Returns this thread's cached blocks to the allocator (see
/// [`trim_thread_cache`](crate::trim_thread_cache)).
#[cfg(feature = "std")]
pub(crate) fn trim() {
    #[cfg(not(cancel_tree_loom))]
    imp::trim();
}

/// Moves `scope` into a fresh heap block.
#[inline]
pub(crate) fn boxed(scope: Scope) -> *const Scope {
    #[cfg(all(feature = "std", not(cancel_tree_loom)))]
    {
        let p = imp::alloc_block();
        // SAFETY: a fresh, suitably sized and aligned, unaliased block.
        unsafe { p.write(scope) };
        p.cast_const()
    }
    #[cfg(not(all(feature = "std", not(cancel_tree_loom))))]
    {
        Box::into_raw(Box::new(scope)).cast_const()
    }
}

/// Drops and frees a scope made by [`boxed`].
///
/// # Safety
/// `p` came from [`boxed`] and nobody uses it any more.
#[inline]
pub(crate) unsafe fn free(p: *const Scope) {
    #[cfg(all(feature = "std", not(cancel_tree_loom)))]
    // SAFETY: (caller); `Scope`'s fields hold no owned resources (the cause
    // cell is released by `drop_cause` before this), so no drop is needed,
    // but run it anyway in case that changes.
    unsafe {
        core::ptr::drop_in_place(p.cast_mut());
        imp::free_block(p.cast_mut());
    }
    #[cfg(all(not(feature = "std"), not(cancel_tree_loom)))]
    // SAFETY: (caller) made by `Box::into_raw` in `boxed`.
    unsafe {
        drop(Box::from_raw(p.cast_mut()))
    }
    // Under loom the block is poisoned and kept, so a late access is caught
    // (see `state_word::checked`).
    #[cfg(cancel_tree_loom)]
    // SAFETY: (caller) nobody uses it any more, so nothing else writes it.
    unsafe {
        (*p).hdr.word.poison()
    }
}
