//! Combinators: futures and streams bounded by a context, and a guard for a
//! context a task owns.

use core::fmt;
use core::future::Future;
use core::ops::Deref;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll};

use futures_core::{FusedStream, Stream};

use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;
use crate::api::done::DoneOwned;
use crate::api::run::Run;
use crate::{Cause, Error};

/// Bounds any future by a context: `fut.cancel_on(&ctx)` borrows it,
/// `fut.with_context(ctx)` owns a clone (`'static`, for `spawn`).
///
/// Both check the context before every poll of the future (so an
/// always-ready future still stops) and drop the future in place once the
/// context is cancelled, resolving to `Err(err)`.
///
/// ```
/// use cancel_tree::{Context, Error, FutureExt};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
/// # }
/// let (ctx, cancel) = Context::background().with_cancel();
/// assert_eq!(block_on(async { 1 }.cancel_on(&ctx)), Ok(1));
/// cancel.cancel();
/// let task = std::future::pending::<()>().with_context(ctx.clone());
/// assert_eq!(block_on(task), Err(Error::Canceled));
/// ```
pub trait FutureExt: Future + Sized {
    /// Runs `self` until it finishes or `ctx` is cancelled (borrowing `ctx`);
    /// the same as [`Context::run`].
    fn cancel_on(self, ctx: &Context) -> Run<'_, Self> {
        ctx.run(self)
    }

    /// Runs `self` until it finishes or `ctx` is cancelled, owning `ctx`.
    fn with_context(self, ctx: Context) -> WithContext<Self> {
        WithContext {
            done: DoneOwned::new(ctx),
            fut: Some(self),
        }
    }
}

impl<F: Future> FutureExt for F {}

/// The future returned by [`FutureExt::with_context`].
#[must_use = "futures do nothing unless polled"]
pub struct WithContext<F> {
    done: DoneOwned,
    fut: Option<F>,
}

impl<F: Future> Future for WithContext<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of both fields; `fut` is only dropped in
        // place with `Pin::set`, never moved.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        // SAFETY: see above.
        let done = unsafe { Pin::new_unchecked(&mut this.done) };
        if let Some(e) = done.context().err() {
            fut.set(None);
            return Poll::Ready(Err(e));
        }
        match fut.as_mut().as_pin_mut() {
            Some(f) => {
                if let Poll::Ready(v) = f.poll(cx) {
                    fut.set(None);
                    return Poll::Ready(Ok(v));
                }
            }
            None => return Poll::Pending, // finished earlier; nothing more to give
        }
        match done.poll(cx) {
            Poll::Ready(e) => {
                fut.set(None);
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for WithContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithContext")
            .field("context", self.done.context())
            .field("finished", &self.fut.is_none())
            .finish()
    }
}

/// Ends a stream when a context is cancelled.
///
/// ```
/// use cancel_tree::{Context, StreamExt};
/// use futures_core::Stream;
/// # use std::pin::Pin;
/// # use std::task::{Context as Cx, Poll};
/// # struct Forever;
/// # impl Stream for Forever {
/// #     type Item = u32;
/// #     fn poll_next(self: Pin<&mut Self>, _: &mut Cx<'_>) -> Poll<Option<u32>> { Poll::Ready(Some(1)) }
/// # }
/// let (ctx, cancel) = Context::background().with_cancel();
/// let mut s = std::pin::pin!(Forever.take_until_cancelled(&ctx));
/// let mut cx = Cx::from_waker(std::task::Waker::noop());
/// assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(Some(1)));
/// cancel.cancel();
/// assert_eq!(s.as_mut().poll_next(&mut cx), Poll::Ready(None)); // an always-ready stream still stops
/// ```
pub trait StreamExt: Stream + Sized {
    /// Yields `self`'s items until `ctx` is cancelled, then ends. The context
    /// is checked before each poll of the stream and again before yielding
    /// each item, so an always-ready stream still stops, and no item is
    /// yielded after the context reports cancelled.
    fn take_until_cancelled(self, ctx: &Context) -> TakeUntilCancelled<Self> {
        TakeUntilCancelled {
            done: ctx.done_owned(),
            stream: Some(self),
        }
    }
}

impl<S: Stream> StreamExt for S {}

/// The stream returned by [`StreamExt::take_until_cancelled`].
#[must_use = "streams do nothing unless polled"]
pub struct TakeUntilCancelled<S> {
    done: DoneOwned,
    stream: Option<S>,
}

impl<S> TakeUntilCancelled<S> {
    /// Why the stream ended early, if it did (`None` while the context is
    /// live).
    pub fn err(&self) -> Option<Error> {
        self.done.context().err()
    }
}

impl<S: Stream> Stream for TakeUntilCancelled<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        // SAFETY: structural pinning of both fields; the stream is only
        // dropped in place with `Pin::set`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut stream = unsafe { Pin::new_unchecked(&mut this.stream) };
        // SAFETY: see above.
        let done = unsafe { Pin::new_unchecked(&mut this.done) };
        let Some(s) = stream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if done.context().is_cancelled() {
            stream.set(None);
            return Poll::Ready(None);
        }
        match s.poll_next(cx) {
            Poll::Ready(Some(item)) => {
                if done.context().is_cancelled() {
                    stream.set(None);
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(item));
            }
            Poll::Ready(None) => {
                stream.set(None);
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if done.poll(cx).is_ready() {
            stream.set(None);
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.stream {
            Some(s) => (0, s.size_hint().1),
            None => (0, Some(0)),
        }
    }
}

impl<S: Stream> FusedStream for TakeUntilCancelled<S> {
    fn is_terminated(&self) -> bool {
        self.stream.is_none()
    }
}

impl<S> fmt::Debug for TakeUntilCancelled<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TakeUntilCancelled")
            .field("context", self.done.context())
            .field("ended", &self.stream.is_none())
            .finish()
    }
}

/// A context and its [`CancelHandle`] in one value, for a task that owns
/// its scope: derefs to the [`Context`], cancels it when dropped (so
/// everything the task started under it ends with the task).
///
/// ```
/// use cancel_tree::{CancelGuard, Context};
/// let parent = Context::background();
/// let watcher;
/// {
///     let scope = CancelGuard::new(&parent);
///     watcher = scope.clone(); // a Context handed to a sub-task
///     assert!(!watcher.is_cancelled());
/// } // the task's scope ends here
/// assert!(watcher.is_cancelled());
/// ```
pub struct CancelGuard {
    ctx: Context,
    handle: Option<CancelHandle>,
}

impl CancelGuard {
    /// A new cancellable child of `parent`, owned by the guard.
    pub fn new(parent: &Context) -> CancelGuard {
        let (ctx, handle) = parent.with_cancel();
        CancelGuard {
            ctx,
            handle: Some(handle),
        }
    }

    /// Wraps a pair from [`Context::with_cancel`] (or a deadline derivation).
    pub fn from_parts(ctx: Context, handle: CancelHandle) -> CancelGuard {
        CancelGuard {
            ctx,
            handle: Some(handle),
        }
    }

    /// Cancels now with `cause` (recording where: see
    /// [`Cause::location`]).
    #[track_caller]
    pub fn cancel_with(&self, cause: impl Into<Cause>) {
        if let Some(h) = &self.handle {
            h.cancel_with(cause);
        }
    }

    /// Gives up the guard without cancelling; returns the context.
    pub fn disarm(mut self) -> Context {
        if let Some(h) = self.handle.take() {
            h.detach();
        }
        self.ctx.clone()
    }
}

impl Deref for CancelGuard {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelGuard")
            .field("context", &self.ctx)
            .finish()
    }
}

/// The cause a [`CancelOnPanic`] guard cancels with: the scope it guarded
/// unwound from a panic.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

#[cfg(feature = "std")]
impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the scope that owned this context panicked")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Panicked {}

/// Cancels a context (cause [`Panicked`]) if the scope that holds the guard
/// unwinds from a panic, and leaves it alive when the scope ends normally
/// (its handle is then detached: the context ends with its parent or its
/// deadline). Made by [`CancelHandle::cancel_on_panic`] (std).
///
/// Only a panic that unwinds through the guard's owner counts: the guard
/// asks [`std::thread::panicking`] when it is dropped. With `panic = "abort"`
/// nothing unwinds and the guard never cancels.
///
/// ```
/// use cancel_tree::{Context, Panicked};
/// let (ctx, handle) = Context::background().with_cancel();
/// let watched = ctx.clone();
/// let worker = std::thread::spawn(move || {
///     let _guard = handle.cancel_on_panic();
///     panic!("worker failed");
/// });
/// assert!(worker.join().is_err());
/// assert!(watched.cause().unwrap().downcast_ref::<Panicked>().is_some());
///
/// let (ctx, handle) = Context::background().with_cancel();
/// {
///     let _guard = handle.cancel_on_panic();
/// } // normal exit
/// assert!(!ctx.is_cancelled());
/// ```
#[cfg(feature = "std")]
#[must_use = "dropping the guard at once detaches the handle"]
pub struct CancelOnPanic {
    handle: Option<CancelHandle>,
}

#[cfg(feature = "std")]
impl CancelHandle {
    /// A guard that cancels with [`Panicked`] if dropped while its thread
    /// panics, and otherwise detaches this handle (see [`CancelOnPanic`]).
    pub fn cancel_on_panic(self) -> CancelOnPanic {
        CancelOnPanic { handle: Some(self) }
    }
}

#[cfg(feature = "std")]
impl CancelOnPanic {
    /// Takes the handle back; the guard no longer acts.
    pub fn into_handle(mut self) -> CancelHandle {
        match self.handle.take() {
            Some(h) => h,
            None => unreachable!("the handle is only taken here or in drop"),
        }
    }
}

#[cfg(feature = "std")]
impl Drop for CancelOnPanic {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if std::thread::panicking() {
                h.cancel_untracked(&Cause::new(Panicked));
            } else {
                h.detach();
            }
        }
    }
}

#[cfg(feature = "std")]
impl fmt::Debug for CancelOnPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelOnPanic")
            .field("handle", &self.handle)
            .finish()
    }
}
