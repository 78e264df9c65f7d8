//! Interop with tokio-util's `CancellationToken` (feature `tokio-util`),
//! both ways, with no polling loop and no spawned task.

use std::boxed::Box;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::AfterFunc;
use crate::api::cancel_handle::CancelHandle;
use crate::api::context::Context;

/// The cause of a context ended by a linked [`CancellationToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCancelled;

impl core::fmt::Display for TokenCancelled {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("cancellation token cancelled")
    }
}

impl std::error::Error for TokenCancelled {}

/// The token's `cancelled()` future, registered with a waker that cancels our
/// context: the token's own waiter list calls us back.
struct Bridge {
    fut: Mutex<Option<std::pin::Pin<Box<WaitForCancellationFutureOwned>>>>,
    handle: Mutex<Option<CancelHandle>>,
}

impl Bridge {
    /// Polls the token's future; if the token is cancelled, cancels the
    /// context and drops both.
    fn check(self: &Arc<Self>) {
        let waker = Waker::from(self.clone());
        let mut cx = TaskContext::from_waker(&waker);
        let ready = {
            let mut fut = self.fut.lock().unwrap_or_else(|e| e.into_inner());
            match fut.as_mut() {
                Some(f) => {
                    let r = f.as_mut().poll(&mut cx).is_ready();
                    if r {
                        *fut = None;
                    }
                    r
                }
                None => false,
            }
        };
        if ready {
            let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = handle {
                h.cancel_untracked(&crate::Cause::new(TokenCancelled));
            }
        }
    }

    /// The context ended first: unregister from the token.
    fn detach(&self) {
        let fut = self.fut.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(fut);
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            h.detach();
        }
    }
}

impl Wake for Bridge {
    fn wake(self: Arc<Self>) {
        self.check();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.check();
    }
}

impl Context {
    /// A child of `self` that is also cancelled (cause [`TokenCancelled`])
    /// when `token` is. The link registers a waker in the token's own waiter
    /// list; nothing polls and no task is spawned. It is dropped as soon as
    /// either side ends.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// use tokio_util::sync::CancellationToken;
    /// let token = CancellationToken::new();
    /// let (ctx, _cancel) = Context::background().with_token(&token);
    /// token.cancel();
    /// assert!(ctx.is_cancelled());
    /// ```
    pub fn with_token(&self, token: &CancellationToken) -> (Context, CancelHandle) {
        let (ctx, handle) = self.with_cancel();
        let bridge = Arc::new(Bridge {
            fut: Mutex::new(Some(Box::pin(token.clone().cancelled_owned()))),
            // The bridge's own right to cancel: detached if the context ends
            // first, so it never cancels on drop.
            handle: Mutex::new(Some(handle.duplicate())),
        });
        bridge.check();
        let b2 = bridge.clone();
        // When the context ends first, stop listening to the token.
        drop(ctx.after_func(move || b2.detach()));
        (ctx, handle)
    }

    /// A [`CancellationToken`] that is cancelled when this context is (from
    /// an `after_func`, so at once and without a task). Cancelling the token
    /// does not cancel the context.
    ///
    /// ```
    /// use cancel_tree::Context;
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let token = ctx.to_token();
    /// cancel.cancel();
    /// assert!(token.is_cancelled());
    /// ```
    pub fn to_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let t = token.clone();
        let reg: AfterFunc = self.after_func(move || t.cancel());
        drop(reg); // keeps running when the context ends
        token
    }
}
