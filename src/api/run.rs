//! [`Run`]: a future raced against cancellation.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context as TaskContext, Poll};

use crate::Error;
use crate::api::context::Context;
use crate::api::done::Done;

/// The future returned by [`Context::run`]: `Ok(output)` if the inner future
/// finishes first, `Err(err)` once the context is cancelled (the inner future
/// is then dropped, in place).
#[must_use = "futures do nothing unless polled"]
pub struct Run<'a, F> {
    ctx: &'a Context,
    done: Done<'a>,
    fut: Option<F>,
}

impl<'a, F: Future> Run<'a, F> {
    pub(crate) fn new(ctx: &'a Context, fut: F) -> Run<'a, F> {
        Run {
            ctx,
            done: ctx.done(),
            fut: Some(fut),
        }
    }
}

impl<F: Future> Future for Run<'_, F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning: `done` and `fut` are never moved out of
        // the pinned `Run`; `fut` is only dropped in place (`Pin::set`).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        // SAFETY: see above.
        let done = unsafe { Pin::new_unchecked(&mut this.done) };
        // Check first: an always-ready future must still stop.
        if let Some(e) = this.ctx.err() {
            fut.set(None);
            return Poll::Ready(Err(e));
        }
        if let Some(f) = fut.as_mut().as_pin_mut() {
            if let Poll::Ready(v) = f.poll(cx) {
                fut.set(None);
                return Poll::Ready(Ok(v));
            }
        } else {
            // Polled after completion: report the context's state.
            return match this.ctx.err() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            };
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

impl<F> fmt::Debug for Run<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("context", self.ctx)
            .field("finished", &self.fut.is_none())
            .finish()
    }
}
