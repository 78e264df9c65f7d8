//! The waiter list: `Done` futures, `after_func` registrations and merged
//! scopes' entries in their other parents, linked
//! intrusively into their scope, so waiting never allocates.
//!
//! A [`WaitLink`] lives inside the thing that waits (a pinned `Done` future,
//! or an `after_func` allocation). Every field of a link is guarded by the
//! lock of the scope it waits on. The protocol that rules out lost wake-ups:
//!
//! 1. a waiter registers only under the scope's lock, after checking
//!    `CANCELLED` under that same lock;
//! 2. the canceller sets `CANCELLED` under the lock (or, lock-free, only on
//!    a node that never had a waiter: state word, invariant 4) and only
//!    afterwards pops waiters, one at a time, under the lock.
//!
//! So either the registration comes first (and the canceller will pop it),
//! or the flag does (and the registrant sees it and does not wait): the
//! flag and the registration are totally ordered by the lock, with no fence
//! games. A popped waiter is marked `NOTIFIED` and its waker is moved out
//! under the lock; the waker is called after the lock is released, and the
//! `Done` may be dropped meanwhile (it no longer owns the waker, and the
//! canceller no longer touches it).

use core::marker::PhantomPinned;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll, Waker};

use crate::Error;
use crate::raw::list::{Linked, Links};
use crate::raw::sync::UnsafeCell;
use crate::tree::node::Scope;
use crate::tree::state_word::{self, Guard, HAS_WAITERS};

pub(crate) const KIND_WAITER: u8 = 0;
pub(crate) const KIND_AFTER_FUNC: u8 = 1;
/// A merged scope's entry in one of its other parents (`tree::merge`).
pub(crate) const KIND_MERGE: u8 = 2;

/// Not in any list.
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
    /// `IDLE`, `LINKED`, `NOTIFIED` or `STOPPED`; guarded by the scope lock.
    status: UnsafeCell<u8>,
}

// SAFETY: `links` projects from `p` itself, so the result keeps the
// provenance of the whole entry (the canceller casts it back to a `Waiter`
// or an after_func node).
unsafe impl Linked for WaitLink {
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
    /// The caller holds the lock of the scope this link belongs to.
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
        // SAFETY: (caller) the lock guards the list and the status.
        unsafe {
            self.waiters.push_front(link);
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

    /// Pops the first waiter, marking it `NOTIFIED` (null: none).
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

/// A `Done` future's entry: the link and the waker of the latest poll.
#[repr(C)]
pub(crate) struct Waiter {
    link: WaitLink,
    /// Guarded by the scope lock.
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
    /// The caller holds the scope lock and `link` is a `KIND_WAITER` link.
    pub(crate) unsafe fn take_waker(link: *const WaitLink) -> Option<Waker> {
        let waiter = link.cast::<Waiter>();
        // SAFETY: `Waiter` is repr(C) with the link first; the waker cell is
        // guarded by the scope lock, which the caller holds.
        unsafe { (*waiter).waker.with_mut(|w| (*w).take()) }
    }

    /// The poll logic of `Done` and `DoneOwned`. `registered` is set once
    /// the waiter may be linked (its owner must then `unregister` on drop).
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
        self.register(registered, scope, cx)
    }

    /// The locked part of [`poll`](Waiter::poll): register, or find the
    /// scope cancelled under its lock.
    fn register(
        self: Pin<&Self>,
        registered: &mut bool,
        scope: &Scope,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Error> {
        // Derived from the whole waiter (not just its link field): the
        // canceller casts it back to reach the waker.
        let link: *const WaitLink = (&*self as *const Waiter).cast();
        if !*registered {
            // A first poll needs a waker anyway: clone it before taking the
            // lock (cloning is user code), and register in one hold.
            let waker = cx.waker().clone();
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
        // SAFETY: lock held.
        if unsafe { self.link.status() } == LINKED {
            // SAFETY: lock held; the waker cell is ours to read.
            let same = self
                .waker
                .with(|w| unsafe { (*w).as_ref().is_some_and(|w| w.will_wake(cx.waker())) });
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
        // SAFETY: lock held; not cancelled, so the link is IDLE or LINKED,
        // and the pinned waiter stays put until `unregister`.
        unsafe {
            if self.link.status() == IDLE {
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
    pub(crate) unsafe fn unregister(&self, scope: *const Scope) {
        if scope.is_null() {
            return;
        }
        // SAFETY: (caller).
        let scope = unsafe { &*scope };
        let guard = scope.hdr.word.lock();
        // SAFETY: lock held.
        let waker = unsafe {
            if self.link.status() == LINKED {
                scope.unlink_waiter((self as *const Waiter).cast(), IDLE);
            }
            self.waker.with_mut(|w| (*w).take())
        };
        drop(guard);
        drop(waker);
    }
}
