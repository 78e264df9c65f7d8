//! The waiter list: `Done` futures, `after_func` registrations and merged
//! scopes' entries in their other parents, linked
//! intrusively into their scope, so waiting never allocates.
//!
//! A [`WaitLink`] lives inside the thing that waits (a pinned `Done` future,
//! or an `after_func` allocation). Every field of a listed link is guarded
//! by the lock of the scope it waits on. The protocol that rules out lost
//! wake-ups:
//!
//! 1. a waiter registers under the scope's lock, after checking `CANCELLED`
//!    under that same lock; or, a `Done` only, in the empty list's slot
//!    without the lock (rule 4);
//! 2. the canceller sets `CANCELLED` under the lock (or, lock-free, only on
//!    a node whose word shows no `HAS_WAITERS`: state word, invariant 4 — a
//!    slot `Done` that has not set it yet sees the ending in its
//!    `fetch_or`, rule 4 — or on an inner node whose lists it drains later
//!    under the lock) and only afterwards pops waiters, one at a time,
//!    under the lock;
//! 3. a popped waiter is marked `NOTIFIED` and its waker is moved out under
//!    the lock; the waker is called after the lock is released, and the
//!    `Done` may be dropped meanwhile (it no longer owns the waker, and the
//!    canceller no longer touches it).
//! 4. **The slot** (with a lock bit only, `raw::lock::IN_WORD`; list
//!    invariant 5). A `Done` polled for the first time on a scope whose
//!    waiter list is empty stores its waker in itself, puts itself in the
//!    list's slot with one CAS of the head (`Release`), and then sets
//!    `HAS_WAITERS` with a `fetch_or` on the state word (`AcqRel`). If that
//!    RMW shows neither `CANCELLED` nor `LOCKED`, every later RMW of the
//!    word (a lock, a lock-free ending) comes after it in the word's
//!    modification order, so it sees `HAS_WAITERS` and, through the
//!    `Acquire` half that reads from our `Release`, the slot item: a lock-free
//!    leaf ending fails (it requires no `HAS_WAITERS`) and takes the lock,
//!    and every locked canceller finds the item in the list. If it shows
//!    either, a canceller may have looked at the list before that
//!    `fetch_or` (even after the head CAS: its `Relaxed` emptiness check is
//!    not ordered after it): the
//!    `Done` takes the lock (waiting for that canceller) and checks
//!    `CANCELLED` under it, as in rule 1. Dropping the `Done` takes it out of
//!    the slot with one CAS; if that fails, a lock holder claimed it (a
//!    canceller: `NOTIFIED`) or adopted it into the list (`LINKED`), and the
//!    `Done` takes the lock and unregisters as a listed waiter does.
//!
//! So either the registration comes first (and the canceller will pop it),
//! or the flag does (and the registrant sees it and does not wait): under
//! the lock the two are ordered by the lock, in the slot by the state word's
//! modification order, with no fence games.

use core::marker::PhantomPinned;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll, Waker};

use crate::Error;
use crate::raw::list::{Linked, Links};
use crate::raw::lock::IN_WORD;
use crate::raw::sync::UnsafeCell;
use crate::tree::node::Scope;
use crate::tree::state_word::{self, CANCELLED, Guard, HAS_WAITERS, LOCKED};

pub(crate) const KIND_WAITER: u8 = 0;
pub(crate) const KIND_AFTER_FUNC: u8 = 1;
/// A merged scope's entry in one of its other parents (`tree::merge`).
pub(crate) const KIND_MERGE: u8 = 2;

/// Not in any list, or (a `Done`) in its list's slot: then only the
/// tagged head says so (list invariant 5).
pub(crate) const IDLE: u8 = 0;
/// In the scope's waiter list.
pub(crate) const LINKED: u8 = 1;
/// Popped by a canceller (the waker was taken / the function claimed).
pub(crate) const NOTIFIED: u8 = 2;
/// Removed by `AfterFunc::stop`.
pub(crate) const STOPPED: u8 = 3;

/// An entry of a scope's waiter list.
#[repr(C)]
pub(crate) struct WaitLink {
    links: Links<WaitLink>,
    pub(crate) kind: u8,
    /// `IDLE`, `LINKED`, `NOTIFIED` or `STOPPED`; guarded by the scope lock
    /// (a slot item's is written first by the lock holder that claims or
    /// adopts it, after its CAS: list invariant 5).
    status: UnsafeCell<u8>,
}

// SAFETY: `links` projects from `p` itself, so the result keeps the
// provenance of the whole entry (the canceller casts it back to a `Waiter`
// or an after_func node).
unsafe impl Linked for WaitLink {
    /// A `Done` may wait in the empty list's slot (rule 4).
    const SLOT: bool = true;

    #[inline(always)]
    unsafe fn links(p: *const WaitLink) -> *const Links<WaitLink> {
        // SAFETY: (caller) `p` is a live link.
        unsafe { &raw const (*p).links }
    }
}

impl WaitLink {
    pub(crate) fn new(kind: u8) -> WaitLink {
        WaitLink {
            links: Links::new(),
            kind,
            status: UnsafeCell::new(IDLE),
        }
    }

    /// # Safety
    /// The caller holds the lock of the scope this link belongs to, and, if
    /// the link is or was in that list's slot, is its owner or has claimed
    /// or adopted it with its own CAS (list invariant 5): the lock alone
    /// does not guard a slot item.
    pub(crate) unsafe fn status(&self) -> u8 {
        // SAFETY: guarded by the scope lock (caller).
        self.status.with(|s| unsafe { *s })
    }

    /// # Safety
    /// As for `status`.
    unsafe fn set_status(&self, v: u8) {
        // SAFETY: guarded by the scope lock (caller).
        self.status.with_mut(|s| unsafe { *s = v })
    }
}

impl Scope {
    /// Pushes `link` at the front of the waiter list and marks it `LINKED`.
    ///
    /// # Safety
    /// `guard` holds this scope's lock; `link` is alive, `IDLE`, and stays
    /// alive until it is unlinked or popped.
    pub(crate) unsafe fn push_waiter(&self, guard: &mut Guard<'_>, link: *const WaitLink) {
        // Before the first link (state word, invariant 4).
        guard.mark(HAS_WAITERS);
        // SAFETY: (caller) the lock guards the list and the status; an
        // adopted slot item is ours to mark once adopted (list invariant 5).
        unsafe {
            let adopted = self.waiters.push_front(link);
            if !adopted.is_null() {
                (*adopted).set_status(LINKED);
            }
            (*link).set_status(LINKED);
        }
    }

    /// Removes a `LINKED` link and marks it `new_status`.
    ///
    /// # Safety
    /// The caller holds this scope's lock; `link` is `LINKED` here.
    pub(crate) unsafe fn unlink_waiter(&self, link: *const WaitLink, new_status: u8) {
        // SAFETY: (caller).
        unsafe {
            self.waiters.unlink(link);
            (*link).set_status(new_status);
        }
    }

    /// Pops the first waiter, marking it `NOTIFIED` (null: none); a slot
    /// item is claimed (list invariant 5).
    ///
    /// # Safety
    /// The caller holds this scope's lock.
    pub(crate) unsafe fn pop_waiter(&self) -> *const WaitLink {
        // SAFETY: lock held (caller).
        unsafe {
            let head = self.waiters.pop_front();
            if !head.is_null() {
                (*head).set_status(NOTIFIED);
            }
            head
        }
    }
}

/// Loom tracks cells, not freed memory: every cell of a dropped waiter is
/// written here, so a canceller that touches it after its owner dropped it
/// races this write and the model fails.
#[cfg(cancel_tree_loom)]
impl Drop for Waiter {
    fn drop(&mut self) {
        // SAFETY: loom only; `&mut self`: the owner's, and the waiter is in
        // no list (its `Done` unregistered it first).
        unsafe {
            self.link.links.set_next(core::ptr::null());
            self.link.links.set_prev(core::ptr::null());
            self.link.status.with_mut(|s| *s = 0xdd);
            self.waker.with_mut(|w| *w = None);
        }
    }
}

/// A `Done` future's entry: the link and the waker of the latest poll.
#[repr(C)]
pub(crate) struct Waiter {
    link: WaitLink,
    /// Guarded by the scope lock; also the owner's alone, unlocked, while
    /// the waiter is unpublished (before its slot CAS, or after that CAS
    /// failed) and after it left the slot itself (list invariant 5).
    waker: UnsafeCell<Option<Waker>>,
    _pinned: PhantomPinned,
}

impl Waiter {
    pub(crate) fn new() -> Waiter {
        Waiter {
            link: WaitLink::new(KIND_WAITER),
            waker: UnsafeCell::new(None),
            _pinned: PhantomPinned,
        }
    }

    /// Takes the waker of a waiter the caller just popped.
    ///
    /// # Safety
    /// The caller holds the scope lock, `link` is a `KIND_WAITER` link, and
    /// the caller popped it (for a slot item: claimed it with its CAS).
    pub(crate) unsafe fn take_waker(link: *const WaitLink) -> Option<Waker> {
        let waiter = link.cast::<Waiter>();
        // SAFETY: `Waiter` is repr(C) with the link first; the waker cell is
        // guarded by the scope lock, which the caller holds.
        unsafe { (*waiter).waker.with_mut(|w| (*w).take()) }
    }

    /// The poll logic of `Done` and `DoneOwned`. `registered` is set once
    /// the waiter may be linked or in the slot (its owner must then
    /// `unregister` on drop).
    ///
    /// # Safety
    /// `scope` is null (never cancelled) or alive for as long as the waiter.
    #[inline]
    pub(crate) unsafe fn poll(
        self: Pin<&Self>,
        registered: &mut bool,
        scope: *const Scope,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Error> {
        if scope.is_null() {
            return Poll::Pending; // can never be cancelled
        }
        // SAFETY: (caller).
        let scope = unsafe { &*scope };
        // Fast path, inlined into the future's poll: one load, no lock. It
        // can only return Ready, never Pending, so it cannot lose a wake-up.
        if let Some(e) = state_word::err_of(scope.hdr.word.load()) {
            return Poll::Ready(e);
        }
        if IN_WORD && !*registered {
            // The slot (rule 4). Cloning the waker is user code: before.
            let waker = cx.waker().clone();
            // SAFETY: never registered, so the waker cell is ours and empty
            // (nobody can see the waiter yet).
            unsafe { self.waker.with_mut(|w| *w = Some(waker)) };
            let link = self.link_ptr();
            // SAFETY: `IN_WORD`, and `WaitLink::SLOT`; the pinned waiter is
            // in no list and stays put until `unregister`.
            if unsafe { scope.waiters.try_enter_slot(link) } {
                *registered = true;
                let prev = scope.hdr.word.mark_waiters_lock_free();
                if prev & (CANCELLED | LOCKED) == 0 {
                    return Poll::Pending;
                }
                // A canceller may have looked at the list before our
                // fetch_or (rule 4).
                return self.recheck(scope);
            }
            // Not empty: the locked path, with the waker taken back.
            // SAFETY: still unpublished: ours.
            let waker = unsafe { self.waker.with_mut(|w| (*w).take()) };
            return self.register(registered, scope, cx, waker);
        }
        self.register(registered, scope, cx, None)
    }

    /// The waiter as a link pointer. Derived from the whole waiter (not just
    /// its link field): the canceller casts it back to reach the waker.
    #[inline(always)]
    fn link_ptr(&self) -> *const WaitLink {
        (self as *const Waiter).cast()
    }

    /// After entering the slot saw `CANCELLED` or `LOCKED` (rule 4): check
    /// `CANCELLED` under the lock, which waits for a canceller that may have
    /// missed the slot item. Not cancelled: registered (every later
    /// canceller locks after us). Cancelled: leave, ready; unless a
    /// canceller already claimed the waiter and took its waker, which it
    /// is about to wake: then pending, as if the poll had come before the
    /// cancel (a ready future is never woken, and a pending one once).
    #[cold]
    #[inline(never)]
    fn recheck(self: Pin<&Self>, scope: &Scope) -> Poll<Error> {
        let guard = scope.hdr.word.lock();
        let Some(e) = state_word::err_of(guard.seen()) else {
            return Poll::Pending;
        };
        // SAFETY: lock held; we own the waiter.
        let waker = unsafe { self.leave_locked(scope) };
        drop(guard);
        let Some(waker) = waker else {
            return Poll::Pending; // claimed: the claimant wakes us
        };
        drop(waker); // user code, outside the lock
        Poll::Ready(e)
    }

    /// Takes the waiter out of wherever it is (the slot, the list, or
    /// nowhere: popped or never linked) and returns its waker, if it still
    /// has it.
    ///
    /// # Safety
    /// The caller holds the scope's lock and owns the waiter.
    unsafe fn leave_locked(&self, scope: &Scope) -> Option<Waker> {
        let link = self.link_ptr();
        // SAFETY: (caller) lock held; only we and lock holders (excluded)
        // move the head off our slot value (list invariant 5).
        unsafe {
            if scope.waiters.in_slot(link) {
                let left = scope.waiters.try_leave_slot(link);
                debug_assert!(left, "only the owner and lock holders move a slot item");
            } else if self.link.status() == LINKED {
                scope.unlink_waiter(link, IDLE);
            }
            self.waker.with_mut(|w| (*w).take())
        }
    }

    /// The locked part of [`poll`](Waiter::poll): register (with `waker`,
    /// cloned by a first poll that found the slot taken), or find the scope
    /// cancelled under its lock.
    #[inline(never)]
    fn register(
        self: Pin<&Self>,
        registered: &mut bool,
        scope: &Scope,
        cx: &mut TaskContext<'_>,
        waker: Option<Waker>,
    ) -> Poll<Error> {
        let link = self.link_ptr();
        if !*registered {
            // A first poll needs a waker anyway: clone it before taking the
            // lock (cloning is user code), and register in one hold.
            let waker = waker.unwrap_or_else(|| cx.waker().clone());
            let mut guard = scope.hdr.word.lock();
            if let Some(e) = state_word::err_of(guard.seen()) {
                drop(guard);
                drop(waker); // user code, outside the lock
                return Poll::Ready(e);
            }
            // SAFETY: lock held; never registered, so the link is IDLE and
            // the waker cell empty; the pinned waiter stays put until
            // `unregister`.
            unsafe {
                self.waker.with_mut(|w| *w = Some(waker));
                scope.push_waiter(&mut guard, link);
            }
            *registered = true;
            return Poll::Pending;
        }
        let guard = scope.hdr.word.lock();
        if let Some(e) = state_word::err_of(guard.seen()) {
            // Cancelled: a canceller may still hold our (popped or not yet
            // popped) link; `unregister` sorts that out under the lock.
            return Poll::Ready(e);
        }
        // SAFETY: lock held; we own the waiter (list invariant 5: a slot
        // item is only claimed under the lock).
        let waiting = unsafe { self.link.status() == LINKED || scope.waiters.in_slot(link) };
        if waiting {
            let same = self.waker.with(|w| {
                // SAFETY: lock held; the waker cell is ours to read (a
                // canceller takes it only under the lock).
                let w = unsafe { (*w).as_ref() };
                w.is_some_and(|w| w.will_wake(cx.waker()))
            });
            if same {
                return Poll::Pending;
            }
        }
        drop(guard);
        // Clone outside the lock: a waker's clone is user code.
        let new_waker = cx.waker().clone();
        let mut guard = scope.hdr.word.lock();
        if let Some(e) = state_word::err_of(guard.seen()) {
            drop(guard);
            drop(new_waker);
            return Poll::Ready(e);
        }
        // SAFETY: lock held.
        let old = self.waker.with_mut(|w| unsafe { (*w).replace(new_waker) });
        // SAFETY: lock held; not cancelled, so the waiter is in the slot,
        // LINKED, or IDLE, and the pinned waiter stays put until
        // `unregister`.
        unsafe {
            if self.link.status() == IDLE && !scope.waiters.in_slot(link) {
                scope.push_waiter(&mut guard, link);
            }
        }
        *registered = true;
        drop(guard);
        drop(old); // user code, outside the lock
        Poll::Pending
    }

    /// Unlinks on drop (the `Done` is going away).
    ///
    /// # Safety
    /// As for [`poll`](Waiter::poll).
    #[inline]
    pub(crate) unsafe fn unregister(&self, scope: *const Scope) {
        if scope.is_null() {
            return;
        }
        // SAFETY: (caller).
        let scope = unsafe { &*scope };
        // Still in the slot: one CAS, and the waiter is ours again (rule 4).
        // SAFETY: we own the waiter.
        if IN_WORD && unsafe { scope.waiters.try_leave_slot(self.link_ptr()) } {
            // SAFETY: out of the slot, untouched by anyone else: ours.
            let waker = unsafe { self.waker.with_mut(|w| (*w).take()) };
            drop(waker);
            return;
        }
        self.unregister_locked(scope);
    }

    /// [`unregister`](Waiter::unregister) under the lock: the waiter was
    /// listed, claimed or adopted (rule 4), or never registered.
    #[inline(never)]
    fn unregister_locked(&self, scope: &Scope) {
        let guard = scope.hdr.word.lock();
        // SAFETY: lock held; we own the waiter.
        let waker = unsafe { self.leave_locked(scope) };
        drop(guard);
        drop(waker);
    }
}
