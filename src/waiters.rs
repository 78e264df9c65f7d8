//! The waiter list: `Done` futures and `after_func` registrations, linked
//! intrusively into their scope, so waiting never allocates.
//!
//! A [`WaitLink`] lives inside the thing that waits (a pinned `Done` future,
//! or an `after_func` allocation). Every field of a link is guarded by the
//! lock of the scope it waits on. The protocol that rules out lost wake-ups:
//!
//! * a waiter registers only under the scope's lock, after checking
//!   `CANCELLED` under that same lock;
//! * the canceller sets `CANCELLED` under the lock and only afterwards pops
//!   waiters, one at a time, under the lock.
//!
//! So either the registration comes first (and the canceller will pop it), or
//! the flag does (and the registrant sees it and does not wait). No fence
//! games: both sides meet in the lock. A popped waiter is marked `NOTIFIED`
//! and its waker is moved out under the lock; the waker is called after the
//! lock is released, and the `Done` may be dropped meanwhile (it no longer
//! owns the waker, and the canceller no longer touches it).

use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr;
use core::task::{Context as TaskContext, Poll, Waker};

use crate::Error;
#[cfg(feature = "alloc")]
use crate::context::Context;
use crate::node::Scope;
use crate::state;
use crate::sync::UnsafeCell;

pub(crate) const KIND_WAITER: u8 = 0;
pub(crate) const KIND_AFTER_FUNC: u8 = 1;

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
    prev: UnsafeCell<*const WaitLink>,
    next: UnsafeCell<*const WaitLink>,
    pub(crate) kind: u8,
    /// `IDLE`, `LINKED`, `NOTIFIED` or `STOPPED`; guarded by the scope lock.
    pub(crate) status: UnsafeCell<u8>,
}

impl WaitLink {
    pub(crate) fn new(kind: u8) -> WaitLink {
        WaitLink {
            prev: UnsafeCell::new(ptr::null()),
            next: UnsafeCell::new(ptr::null()),
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
    pub(crate) unsafe fn set_status(&self, v: u8) {
        // SAFETY: guarded by the scope lock (caller).
        self.status.with_mut(|s| unsafe { *s = v })
    }
}

impl Scope {
    /// Pushes `link` at the front of the waiter list and marks it `LINKED`.
    ///
    /// # Safety
    /// The caller holds this scope's lock; `link` is alive, `IDLE`, and
    /// stays alive until it is unlinked or popped.
    pub(crate) unsafe fn push_waiter(&self, link: *const WaitLink) {
        // SAFETY: every cell touched is guarded by our lock (caller); listed
        // links are alive (they unlink under this lock before they die).
        unsafe {
            let head = self.waiters.with(|h| *h);
            (*link).prev.with_mut(|p| *p = ptr::null());
            (*link).next.with_mut(|n| *n = head);
            if !head.is_null() {
                (*head).prev.with_mut(|p| *p = link);
            }
            self.waiters.with_mut(|h| *h = link);
            self.hdr
                .word
                .mark_locked(state::HAS_WAITERS, self.hdr.word.load());
            (*link).set_status(LINKED);
        }
    }

    /// Removes a `LINKED` link and marks it `new_status`.
    ///
    /// # Safety
    /// The caller holds this scope's lock; `link` is `LINKED` here.
    pub(crate) unsafe fn unlink_waiter(&self, link: *const WaitLink, new_status: u8) {
        // SAFETY: as in `push_waiter`.
        unsafe {
            let prev = (*link).prev.with(|p| *p);
            let next = (*link).next.with(|n| *n);
            if prev.is_null() {
                self.waiters.with_mut(|h| *h = next);
            } else {
                (*prev).next.with_mut(|n| *n = next);
            }
            if !next.is_null() {
                (*next).prev.with_mut(|p| *p = prev);
            }
            (*link).set_status(new_status);
        }
    }

    /// Pops the first waiter, marking it `NOTIFIED`.
    ///
    /// # Safety
    /// The caller holds this scope's lock.
    pub(crate) unsafe fn pop_waiter(&self) -> *const WaitLink {
        // SAFETY: lock held (caller).
        unsafe {
            let head = self.waiters.with(|h| *h);
            if !head.is_null() {
                self.unlink_waiter(head, NOTIFIED);
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
    fn new() -> Waiter {
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

    /// The poll logic shared by `Done` and `DoneOwned`.
    fn poll(
        self: Pin<&Self>,
        registered: &mut bool,
        scope: *const Scope,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Error> {
        if scope.is_null() {
            return Poll::Pending; // can never be cancelled
        }
        // SAFETY: the scope outlives the future (it borrows or owns it).
        let scope = unsafe { &*scope };
        // Fast path: one load, no lock.
        if let Some(e) = state::err_of(scope.hdr.word.load()) {
            return Poll::Ready(e);
        }
        // Derived from the whole waiter (not just its link field): the
        // canceller casts it back to reach the waker.
        let link: *const WaitLink = (&*self as *const Waiter).cast();
        let guard = scope.hdr.word.lock();
        if let Some(e) = state::err_of(guard.load()) {
            // Cancelled: a canceller may still hold our (popped or not yet
            // popped) link; `drop` sorts that out under the lock.
            return Poll::Ready(e);
        }
        // SAFETY: lock held.
        let status = unsafe { self.link.status() };
        if status == LINKED {
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
        let guard = scope.hdr.word.lock();
        if let Some(e) = state::err_of(guard.load()) {
            drop(guard);
            drop(new_waker);
            return Poll::Ready(e);
        }
        // SAFETY: lock held.
        let old = self.waker.with_mut(|w| unsafe { (*w).replace(new_waker) });
        // SAFETY: lock held; not cancelled, so the link is IDLE or LINKED.
        unsafe {
            if self.link.status() == IDLE {
                scope.push_waiter(link);
            }
        }
        *registered = true;
        {}
        drop(guard);
        drop(old); // user code, outside the lock
        Poll::Pending
    }

    /// Unlinks on drop (the `Done` is going away).
    fn unregister(&self, scope: *const Scope) {
        if scope.is_null() {
            return;
        }
        // SAFETY: the scope outlives the future.
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

/// The future returned by [`Context::done`]: resolves to the context's
/// [`Error`] once it is cancelled.
///
/// Creating, polling and dropping it never allocates: the waiter lives inside
/// the future and is linked into the context's waiter list while pending.
/// It wakes the waker of its latest poll. Polled after cancellation it is
/// ready at once; polling it again after that gives the same error.
///
/// ```
/// # use cancel_tree::{Context, Error};
/// # futures_lite_block_on(async {
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// assert_eq!(ctx.done().await, Error::Canceled);
/// # });
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Done<'a> {
    /// The scope waited on (null: never cancelled), kept alive for `'a` by
    /// whoever lent it (a `Context` or a `ScopeRef`).
    scope: *const Scope,
    owner: core::marker::PhantomData<&'a ()>,
    waiter: Waiter,
    registered: bool,
    finished: bool,
}

#[cfg(feature = "alloc")]
/// The `'static` form of [`Done`], from [`Context::done_owned`]; it holds a
/// clone of the context.
#[must_use = "futures do nothing unless polled"]
pub struct DoneOwned {
    ctx: Context,
    waiter: Waiter,
    registered: bool,
    finished: bool,
}

// SAFETY: the raw pointers inside the waiter link are only touched under the
// scope's lock, and the waker is `Send + Sync`.
unsafe impl Send for Done<'_> {}
// SAFETY: `&Done` exposes nothing but `Debug` and `is_terminated`.
unsafe impl Sync for Done<'_> {}
// SAFETY: as for `Done`.
#[cfg(feature = "alloc")]
unsafe impl Send for DoneOwned {}
// SAFETY: as for `Done`.
#[cfg(feature = "alloc")]
unsafe impl Sync for DoneOwned {}

impl<'a> Done<'a> {
    /// # Safety
    /// `scope` is null or stays alive for `'a`.
    pub(crate) unsafe fn new(scope: *const Scope) -> Done<'a> {
        Done {
            scope,
            owner: core::marker::PhantomData,
            waiter: Waiter::new(),
            registered: false,
            finished: false,
        }
    }
}

#[cfg(feature = "alloc")]
impl DoneOwned {
    pub(crate) fn new(ctx: Context) -> DoneOwned {
        DoneOwned {
            ctx,
            waiter: Waiter::new(),
            registered: false,
            finished: false,
        }
    }

    /// The context this future waits on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl Future for Done<'_> {
    type Output = Error;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        // SAFETY: we never move the waiter out of the pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this.waiter` is pinned because `this` is.
        let waiter = unsafe { Pin::new_unchecked(&this.waiter) };
        let out = waiter.poll(&mut this.registered, this.scope, cx);
        if out.is_ready() {
            this.finished = true;
        }
        out
    }
}

#[cfg(feature = "alloc")]
impl Future for DoneOwned {
    type Output = Error;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        // SAFETY: we never move the waiter out of the pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this.waiter` is pinned because `this` is.
        let waiter = unsafe { Pin::new_unchecked(&this.waiter) };
        let out = waiter.poll(&mut this.registered, this.ctx.scope, cx);
        if out.is_ready() {
            this.finished = true;
        }
        out
    }
}

impl futures_core::FusedFuture for Done<'_> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

#[cfg(feature = "alloc")]
impl futures_core::FusedFuture for DoneOwned {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.waiter.unregister(self.scope);
        }
    }
}

#[cfg(feature = "alloc")]
impl Drop for DoneOwned {
    fn drop(&mut self) {
        if self.registered {
            self.waiter.unregister(self.ctx.scope);
        }
    }
}

impl core::fmt::Debug for Done<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let err = if self.scope.is_null() {
            None
        } else {
            // SAFETY: alive for 'a.
            state::err_of(unsafe { (*self.scope).hdr.word.load() })
        };
        f.debug_struct("Done")
            .field("err", &err)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "alloc")]
impl core::fmt::Debug for DoneOwned {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DoneOwned")
            .field("context", &self.ctx)
            .finish_non_exhaustive()
    }
}
