//! The intrusive doubly-linked list. A scope's children and its waiters are
//! both kept in one of these; the items carry their own links, so linking
//! never allocates and an item leaves its list in O(1).
//!
//! # Invariants
//!
//! 1. **One lock per list.** A list's [`Head`] and the [`Links`] of every
//!    item in it are read and written only by a holder of the lock that
//!    guards that list (every `unsafe fn` here requires it).
//! 2. **Listed items are alive.** An item leaves its list (under the lock of
//!    invariant 1) before its memory is freed or reused; so following a link
//!    under the lock always reaches a live item.
//! 3. **One list at a time.** An item is in at most one list; its links mean
//!    nothing while it is in none. An item that is in no list may use them
//!    for its owner's private purposes (the cancel walk threads its work
//!    list through the sibling links of children it popped).
//! 4. **Shape.** The first item's `prev` and the last item's `next` are
//!    null; the head points at the first item (null: empty).
//!
//! The list does not know whether an item is in it: callers keep that in
//! their own state (a `LINKED` bit or a status), changed under the same lock.

use core::ptr;

use crate::raw::sync::UnsafeCell;

/// The links an item carries (invariants 1 and 3).
pub(crate) struct Links<T> {
    prev: UnsafeCell<*const T>,
    next: UnsafeCell<*const T>,
}

/// An item type: where its [`Links`] are.
///
/// # Safety
/// `links(p)` returns a pointer to the `Links` inside the item at `p`,
/// derived from `p` (so it has the provenance of the whole item), for any
/// `p` pointing to a live item.
pub(crate) unsafe trait Linked: Sized {
    /// The links of the item at `p`.
    ///
    /// # Safety
    /// `p` points to a live item.
    unsafe fn links(p: *const Self) -> *const Links<Self>;
}

/// The head of a list: the first item, or null.
pub(crate) struct Head<T>(UnsafeCell<*const T>);

impl<T> Links<T> {
    crate::raw::sync::const_unless_loom! {
        pub(crate) fn new() -> Links<T> {
            Links {
                prev: UnsafeCell::new(ptr::null()),
                next: UnsafeCell::new(ptr::null()),
            }
        }
    }

    /// # Safety
    /// The caller holds the list's lock, or the item is in no list and the
    /// caller owns its links (invariant 3).
    #[inline(always)]
    pub(crate) unsafe fn next(&self) -> *const T {
        // SAFETY: (caller) nobody writes the cell concurrently.
        self.next.with(|n| unsafe { *n })
    }

    /// # Safety
    /// As for [`next`](Links::next).
    #[inline(always)]
    pub(crate) unsafe fn set_next(&self, v: *const T) {
        // SAFETY: (caller) nobody reads or writes the cell concurrently.
        self.next.with_mut(|n| unsafe { *n = v })
    }

    /// # Safety
    /// As for [`next`](Links::next).
    #[inline(always)]
    pub(crate) unsafe fn prev(&self) -> *const T {
        // SAFETY: (caller) nobody writes the cell concurrently.
        self.prev.with(|p| unsafe { *p })
    }

    /// # Safety
    /// As for [`next`](Links::next).
    #[inline(always)]
    pub(crate) unsafe fn set_prev(&self, v: *const T) {
        // SAFETY: (caller) nobody reads or writes the cell concurrently.
        self.prev.with_mut(|p| unsafe { *p = v })
    }
}

impl<T: Linked> Head<T> {
    crate::raw::sync::const_unless_loom! {
        pub(crate) fn new() -> Head<T> {
            Head(UnsafeCell::new(ptr::null()))
        }
    }

    /// The first item (null: empty).
    ///
    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn first(&self) -> *const T {
        // SAFETY: (caller) invariant 1.
        self.0.with(|h| unsafe { *h })
    }

    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn is_empty(&self) -> bool {
        // SAFETY: (caller).
        unsafe { self.first().is_null() }
    }

    /// Links `item` at the front.
    ///
    /// # Safety
    /// The caller holds the list's lock; `item` is alive, in no list, and
    /// stays alive until it is unlinked or popped (invariants 2 and 3).
    #[inline(always)]
    pub(crate) unsafe fn push_front(&self, item: *const T) {
        // SAFETY: (caller) the lock guards every cell touched; the old first
        // item is alive (invariant 2).
        unsafe {
            let first = self.first();
            let links = &*T::links(item);
            links.set_prev(ptr::null());
            links.set_next(first);
            if !first.is_null() {
                (*T::links(first)).set_prev(item);
            }
            self.0.with_mut(|h| *h = item);
        }
    }

    /// Removes `item`.
    ///
    /// # Safety
    /// The caller holds the list's lock and `item` is in this list.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&self, item: *const T) {
        // SAFETY: (caller) the lock guards every cell touched; the
        // neighbours are listed, so alive (invariant 2).
        unsafe {
            let links = &*T::links(item);
            let prev = links.prev();
            let next = links.next();
            // A caller that unlinks an item twice (its own record of being
            // listed gone stale) would write through links the list gave
            // away: in debug builds, check that `item` is where its links
            // say (invariant 4).
            debug_assert!(
                if prev.is_null() {
                    self.first() == item
                } else {
                    (*T::links(prev)).next() == item
                },
                "unlink of an item that is not in the list"
            );
            if prev.is_null() {
                self.0.with_mut(|h| *h = next);
            } else {
                (*T::links(prev)).set_next(next);
            }
            if !next.is_null() {
                (*T::links(next)).set_prev(prev);
            }
        }
    }

    /// Removes and returns the first item (null: empty).
    ///
    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn pop_front(&self) -> *const T {
        // SAFETY: (caller).
        unsafe {
            let first = self.first();
            if !first.is_null() {
                self.unlink(first);
            }
            first
        }
    }

    /// Empties the list at once and returns its former first item (null:
    /// it was empty). The items are then in no list (invariant 3): their
    /// `next` links, as the list left them, chain them in order for the
    /// caller, who owns those links until it links each item again.
    ///
    /// # Safety
    /// The caller holds the list's lock.
    /// (Used by the task groups, which need `alloc`.)
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    #[inline(always)]
    pub(crate) unsafe fn take_all(&self) -> *const T {
        // SAFETY: (caller) invariant 1.
        unsafe {
            let first = self.first();
            self.0.with_mut(|h| *h = ptr::null());
            first
        }
    }
}

#[cfg(all(test, not(cancel_tree_loom)))]
mod tests {
    use super::*;

    struct Item {
        links: Links<Item>,
        id: u32,
    }

    // SAFETY: `links` projects from `p` itself.
    unsafe impl Linked for Item {
        unsafe fn links(p: *const Self) -> *const Links<Self> {
            // SAFETY: (caller) `p` is live.
            unsafe { &raw const (*p).links }
        }
    }

    fn item(id: u32) -> Item {
        Item {
            links: Links::new(),
            id,
        }
    }

    /// The ids front to back, checking every `prev` on the way (invariant 4).
    fn ids(head: &Head<Item>) -> [u32; 8] {
        let mut out = [0; 8];
        let mut n = 0;
        // SAFETY: single-threaded test: the "lock" is trivially held, and
        // every listed item is a live local.
        unsafe {
            let mut prev = ptr::null();
            let mut cur = head.first();
            while !cur.is_null() {
                assert_eq!((*cur).links.prev(), prev, "prev link of item {n}");
                out[n] = (*cur).id;
                n += 1;
                prev = cur;
                cur = (*cur).links.next();
            }
        }
        out
    }

    #[test]
    fn push_unlink_pop_keep_the_shape() {
        let head = Head::<Item>::new();
        let (a, b, c) = (item(1), item(2), item(3));
        // SAFETY: the items outlive the list's use of them and are in no
        // other list; one thread, so the lock is trivially held.
        unsafe {
            assert!(head.is_empty());
            head.push_front(&a);
            head.push_front(&b);
            head.push_front(&c);
            assert_eq!(ids(&head)[..3], [3, 2, 1]);
            head.unlink(&b); // middle
            assert_eq!(ids(&head)[..3], [3, 1, 0]);
            head.unlink(&a); // last
            assert_eq!(ids(&head)[..2], [3, 0]);
            head.push_front(&a);
            head.unlink(&a); // first
            assert_eq!(ids(&head)[..2], [3, 0]);
            assert_eq!(head.pop_front(), &c as *const Item);
            assert!(head.is_empty());
            assert!(head.pop_front().is_null(), "popping an empty list");
        }
    }

    #[test]
    fn take_all_empties_the_list_and_chains_its_items_in_order() {
        let head = Head::<Item>::new();
        let (a, b, c) = (item(1), item(2), item(3));
        // SAFETY: as above.
        unsafe {
            assert!(head.take_all().is_null(), "taking from an empty list");
            head.push_front(&a);
            head.push_front(&b);
            head.push_front(&c);
            let mut cur = head.take_all();
            assert!(head.is_empty());
            let mut seen = [0; 3];
            for slot in &mut seen {
                *slot = (*cur).id;
                cur = (*cur).links.next();
            }
            assert!(cur.is_null(), "the chain ends with the last item");
            assert_eq!(seen, [3, 2, 1]);
            // The items can be linked again.
            head.push_front(&b);
            assert_eq!(ids(&head)[..2], [2, 0]);
        }
    }

    #[test]
    fn links_of_an_unlisted_item_are_free_for_private_use() {
        let head = Head::<Item>::new();
        let (a, b) = (item(1), item(2));
        // SAFETY: as above.
        unsafe {
            head.push_front(&a);
            head.push_front(&b);
            let popped = head.pop_front();
            // Invariant 3: the popped item's links are ours now.
            (*popped).links.set_next(&a);
            assert_eq!(ids(&head)[..2], [1, 0], "the list is unaffected");
            assert_eq!((*popped).links.next(), &a as *const Item);
        }
    }
}
