//! [`Done`] and [`DoneOwned`]: futures that resolve once a context is
//! cancelled. The waiter they hold, and the registration protocol, are in
//! `tree::waiter_list`.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll};

use crate::Error;
#[cfg(feature = "alloc")]
use crate::api::context::Context;
use crate::tree::node::Scope;
use crate::tree::state_word;
use crate::tree::waiter_list::Waiter;

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
// scope's lock, or by the future's owner while it is unpublished or in the
// waiter list's slot (list invariant 5), and the waker is `Send + Sync`.
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        // SAFETY: we never move the waiter out of the pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this.waiter` is pinned because `this` is.
        let waiter = unsafe { Pin::new_unchecked(&this.waiter) };
        // SAFETY: the scope outlives the future (it is borrowed for 'a).
        let out = unsafe { waiter.poll(&mut this.registered, this.scope, cx) };
        if out.is_ready() {
            this.finished = true;
        }
        out
    }
}

#[cfg(feature = "alloc")]
impl Future for DoneOwned {
    type Output = Error;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        // SAFETY: we never move the waiter out of the pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this.waiter` is pinned because `this` is.
        let waiter = unsafe { Pin::new_unchecked(&this.waiter) };
        // SAFETY: the owned context keeps its scope alive.
        let out = unsafe { waiter.poll(&mut this.registered, this.ctx.scope, cx) };
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
            // SAFETY: the scope outlives the future.
            unsafe { self.waiter.unregister(self.scope) };
        }
    }
}

#[cfg(feature = "alloc")]
impl Drop for DoneOwned {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: the owned context keeps its scope alive.
            unsafe { self.waiter.unregister(self.ctx.scope) };
        }
    }
}

impl core::fmt::Debug for Done<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let err = if self.scope.is_null() {
            None
        } else {
            // SAFETY: alive for 'a.
            state_word::err_of(unsafe { (*self.scope).hdr.word.load() })
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
