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
//! 5. **The slot** (item types with [`Linked::SLOT`], and only when the lock
//!    is a bit of a word, [`IN_WORD`]: nothing runs beside a critical
//!    section). One item may enter an *empty* list without the lock
//!    ([`Head::try_enter_slot`]: a CAS of the head from null to the item
//!    with its low bit set, the *tag*), and leave it again without the lock
//!    while it is still there ([`Head::try_leave_slot`]: a CAS back to
//!    null). A tagged head is the list's only item, and it is not under
//!    invariants 1 and 2: its owner may take it out and free it at any
//!    moment. So a lock holder reads and writes nothing of a tagged item
//!    before its own CAS has moved the head off the tagged value: it either
//!    claims the item ([`Head::pop_front`], head to null) or adopts it as an
//!    ordinary item ([`Head::push_front`], head to the untagged pointer);
//!    after that the owner's CAS fails and the owner takes the lock. The
//!    lock-free writers only ever replace a null head or their own tagged
//!    item, so a lock holder's write of the head is a CAS when it may find
//!    it null or tagged, and may be a plain store when it found it untagged
//!    and not null (nothing lock-free writes it then). An item that ever
//!    was in a slot and was adopted is an ordinary item from then on.
//!
//! The list does not know whether an item is in it: callers keep that in
//! their own state (a `LINKED` bit or a status), changed under the same lock
//! (a slot item: the tagged head itself says so).

use core::ptr;

use crate::raw::lock::IN_WORD;
use crate::raw::sync::{AtomicPtr, Ordering, UnsafeCell};

/// The low bit of a head that holds a slot item (invariant 5). Items are
/// at least pointer-aligned (they hold [`Links`]), so the bit is free.
const TAG: usize = 1;

#[inline(always)]
fn tagged<T>(p: *mut T) -> bool {
    p.addr() & TAG != 0
}

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
    /// `true` if an item may sit in an empty list's slot without the lock
    /// (invariant 5). Such an item type has no `take_all`.
    const SLOT: bool = false;

    /// The links of the item at `p`.
    ///
    /// # Safety
    /// `p` points to a live item.
    unsafe fn links(p: *const Self) -> *const Links<Self>;
}

/// The head of a list: the first item, or null; or a tagged slot item
/// (invariant 5). Under the lock it is read `Relaxed` when no slot item's
/// contents are read after (no slots; or only the pointer's nullness or
/// identity is used: `is_empty`, `in_slot`), and with `Acquire` when they
/// may be (pairs with the `Release` of [`Head::try_enter_slot`]: the
/// owner's writes to its item).
pub(crate) struct Head<T>(AtomicPtr<T>);

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
    /// caller owns its links (invariant 3). An item in a slot is its
    /// owner's until a lock holder's CAS claims or adopts it: the lock
    /// alone does not give its links (invariant 5).
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
            Head(AtomicPtr::new(ptr::null_mut()))
        }
    }

    /// `true` if slots are possible for this list (invariant 5).
    const SLOTS: bool = T::SLOT && IN_WORD;

    /// `true` if the list is empty (a slot item counts as an item).
    ///
    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn is_empty(&self) -> bool {
        // Relaxed: only the pointer's nullness is used; whoever goes on to
        // touch an item loads or CASes it again (`pop_front`).
        self.0.load(Ordering::Relaxed).is_null()
    }

    /// Links `item` at the front. Returns the slot item it had to adopt
    /// first (invariant 5), now an ordinary item, or null: the caller
    /// updates the adopted item's status under the same lock.
    ///
    /// # Safety
    /// The caller holds the list's lock; `item` is alive, in no list, and
    /// stays alive until it is unlinked or popped (invariants 2 and 3).
    #[inline(always)]
    pub(crate) unsafe fn push_front(&self, item: *const T) -> *const T {
        let item = item.cast_mut();
        // SAFETY: (caller) the lock guards every cell touched; the old first
        // item is alive (invariant 2) or adopted below (invariant 5).
        unsafe {
            let links = &*T::links(item);
            links.set_prev(ptr::null());
            if !Self::SLOTS {
                let first = self.0.load(Ordering::Relaxed);
                links.set_next(first);
                if !first.is_null() {
                    (*T::links(first)).set_prev(item);
                }
                self.0.store(item, Ordering::Relaxed);
                return ptr::null();
            }
            let mut adopted = ptr::null_mut();
            // Acquire: pairs with `try_enter_slot`'s Release (a tagged head's
            // item is read once adopted).
            let mut cur = self.0.load(Ordering::Acquire);
            loop {
                if cur.is_null() {
                    links.set_next(ptr::null());
                    // A CAS: a slot registrant may fill the empty list first
                    // (invariant 5). Relaxed: a slot item's owner reads
                    // nothing of ours; other lock holders meet us in the lock.
                    match self
                        .0
                        .compare_exchange(cur, item, Ordering::Relaxed, Ordering::Acquire)
                    {
                        Ok(_) => return adopted,
                        Err(now) => {
                            cur = now;
                            continue;
                        }
                    }
                }
                if tagged(cur) {
                    let slot = cur.map_addr(|a| a & !TAG);
                    // Adopt the slot item before touching it (invariant 5).
                    // Acquire on success: pairs with the Release of its
                    // `try_enter_slot`; on failure, with the Release of a
                    // newer one (the owner left and maybe a new one came).
                    match self
                        .0
                        .compare_exchange(cur, slot, Ordering::Acquire, Ordering::Acquire)
                    {
                        Ok(_) => {
                            adopted = slot;
                            cur = slot;
                        }
                        Err(now) => {
                            cur = now;
                            continue;
                        }
                    }
                }
                // Untagged and not null: nothing lock-free writes the head
                // now (invariant 5), so a store will do.
                links.set_next(cur);
                (*T::links(cur)).set_prev(item);
                self.0.store(item, Ordering::Relaxed);
                return adopted;
            }
        }
    }

    /// Removes `item`.
    ///
    /// # Safety
    /// The caller holds the list's lock and `item` is in this list, not in
    /// its slot.
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
                    // Relaxed: the head is `item`, untagged (caller).
                    self.0.load(Ordering::Relaxed).cast_const() == item
                } else {
                    (*T::links(prev)).next() == item
                },
                "unlink of an item that is not in the list"
            );
            if prev.is_null() {
                // The head is `item`, untagged: a store (invariant 5).
                self.0.store(next.cast_mut(), Ordering::Relaxed);
            } else {
                (*T::links(prev)).set_next(next);
            }
            if !next.is_null() {
                (*T::links(next)).set_prev(prev);
            }
        }
    }

    /// Removes and returns the first item (null: empty). A slot item is
    /// claimed with a CAS (invariant 5); the caller then owns what its
    /// owner published before entering the slot.
    ///
    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn pop_front(&self) -> *const T {
        // Acquire: pairs with `try_enter_slot`'s Release.
        let mut cur = self.0.load(if Self::SLOTS {
            Ordering::Acquire
        } else {
            Ordering::Relaxed
        });
        loop {
            if cur.is_null() {
                return ptr::null();
            }
            if Self::SLOTS && tagged(cur) {
                // Acquire: as above. On failure the owner left (null) or a
                // new slot item came: look again.
                match self.0.compare_exchange(
                    cur,
                    ptr::null_mut(),
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return cur.map_addr(|a| a & !TAG),
                    Err(now) => {
                        cur = now;
                        continue;
                    }
                }
            }
            // SAFETY: (caller) an untagged first item is listed.
            unsafe { self.unlink(cur) };
            return cur;
        }
    }

    /// Empties the list at once and returns its former first item (null:
    /// it was empty). The items are then in no list (invariant 3): their
    /// `next` links, as the list left them, chain them in order for the
    /// caller, who owns those links until it links each item again. Not for
    /// lists with slots.
    ///
    /// # Safety
    /// The caller holds the list's lock.
    /// (Used by the task groups, which need `alloc`.)
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    #[inline(always)]
    pub(crate) unsafe fn take_all(&self) -> *const T {
        const { assert!(!T::SLOT, "a list with slots has no take_all") };
        // Relaxed: invariant 1 (no slots).
        let first = self.0.load(Ordering::Relaxed);
        self.0.store(ptr::null_mut(), Ordering::Relaxed);
        first
    }

    /// The first item (null: empty), left in the list. Not for lists with
    /// slots (their slot item may leave at any moment).
    ///
    /// # Safety
    /// The caller holds the list's lock.
    #[inline(always)]
    pub(crate) unsafe fn first(&self) -> *const T {
        const { assert!(!T::SLOT, "a list with slots has no first") };
        // Relaxed: invariant 1 (no slots).
        self.0.load(Ordering::Relaxed)
    }

    /// Puts `item` in the empty list's slot, without the lock (invariant
    /// 5): `false` if the list is not empty. `item` must then stay alive
    /// until it left the slot ([`try_leave_slot`](Head::try_leave_slot)),
    /// or until the lock holder that claimed or adopted it is done with it
    /// (its owner learns which under the lock).
    ///
    /// # Safety
    /// `T::SLOT` and [`IN_WORD`]; `item` is alive, pinned, in no list, and
    /// its owner is the only thread using it.
    #[inline(always)]
    pub(crate) unsafe fn try_enter_slot(&self, item: *const T) -> bool {
        debug_assert!(Self::SLOTS);
        // SAFETY: (caller) the links are the owner's (invariant 3).
        unsafe {
            let links = &*T::links(item);
            links.set_prev(ptr::null());
            links.set_next(ptr::null());
        }
        // Release: publishes the item (its links and whatever the owner wrote
        // before) to the lock holder that claims or adopts it (the Acquire of
        // `pop_front` / `push_front`). Failure: nothing read.
        self.0
            .compare_exchange(
                ptr::null_mut(),
                item.cast_mut().map_addr(|a| a | TAG),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Takes `item` out of the slot without the lock: `true` if it was still
    /// there, and then nobody else touched it. `false`: a lock holder claimed
    /// or adopted it (or it never was there); the owner must take the lock to
    /// learn which and wait for the claimant.
    ///
    /// # Safety
    /// The caller owns `item` (its `try_enter_slot` caller).
    #[inline(always)]
    pub(crate) unsafe fn try_leave_slot(&self, item: *const T) -> bool {
        // Relaxed both ways: on success no other thread read or wrote the
        // item since its `try_enter_slot`; on failure the owner meets the
        // claimant in the lock.
        self.0
            .compare_exchange(
                item.cast_mut().map_addr(|a| a | TAG),
                ptr::null_mut(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// `true` if `item` is in the slot.
    ///
    /// # Safety
    /// The caller holds the list's lock and owns `item`: then nobody else
    /// moves the head off or onto `item`'s tagged value (invariant 5).
    #[inline(always)]
    pub(crate) unsafe fn in_slot(&self, item: *const T) -> bool {
        // Relaxed: only the owner (us) and lock holders (excluded) write it.
        Self::SLOTS && self.0.load(Ordering::Relaxed) == item.cast_mut().map_addr(|a| a | TAG)
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
            let mut cur = head.0.load(Ordering::Relaxed).cast_const();
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

    struct SlotItem {
        links: Links<SlotItem>,
    }

    // SAFETY: `links` projects from `p` itself.
    unsafe impl Linked for SlotItem {
        const SLOT: bool = true;
        unsafe fn links(p: *const Self) -> *const Links<Self> {
            // SAFETY: (caller) `p` is live.
            unsafe { &raw const (*p).links }
        }
    }

    #[test]
    fn the_slot_is_entered_left_claimed_and_adopted() {
        if !IN_WORD {
            return; // no slots beside a critical section (invariant 5)
        }
        let head = Head::<SlotItem>::new();
        let (a, b) = (
            SlotItem {
                links: Links::new(),
            },
            SlotItem {
                links: Links::new(),
            },
        );
        // SAFETY: one thread, so the lock is trivially held; the items are
        // live locals, in no other list.
        unsafe {
            assert!(head.try_enter_slot(&a));
            assert!(!head.is_empty(), "a slot item is an item");
            assert!(head.in_slot(&a));
            assert!(!head.try_enter_slot(&b), "only an empty list has a slot");
            assert!(head.try_leave_slot(&a));
            assert!(head.is_empty());
            assert!(!head.try_leave_slot(&a), "gone already");
            // Claimed by a pop: the owner's leave then fails.
            assert!(head.try_enter_slot(&a));
            assert_eq!(head.pop_front(), &a as *const SlotItem);
            assert!(head.is_empty());
            assert!(!head.try_leave_slot(&a));
            // Adopted by a push: an ordinary first... last item now.
            assert!(head.try_enter_slot(&a));
            assert_eq!(head.push_front(&b), &a as *const SlotItem, "adopted");
            assert!(!head.in_slot(&a));
            assert!(!head.try_leave_slot(&a));
            assert_eq!(a.links.prev(), &b as *const SlotItem);
            head.unlink(&a);
            assert_eq!(head.pop_front(), &b as *const SlotItem);
            assert!(head.is_empty());
            assert!(head.push_front(&a).is_null(), "nothing to adopt");
            assert_eq!(head.pop_front(), &a as *const SlotItem);
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
