//! Blocking waits (std): park the thread on a `Done` future. Not on
//! wasm32-unknown-unknown, where blocking the host's only thread could never
//! see a cancellation; on wasm without threads they sleep instead and fire
//! `StdClock`'s deadlines themselves.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::Error;
use crate::api::context::Context;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

pub(crate) fn wait(ctx: &Context) -> Error {
    loop {
        if let Some(e) = wait_until(ctx, None) {
            return e;
        }
    }
}

pub(crate) fn wait_timeout(ctx: &Context, timeout: Duration) -> Option<Error> {
    // Too far to represent: wait forever.
    wait_until(ctx, Instant::now().checked_add(timeout))
}

fn wait_until(ctx: &Context, deadline: Option<Instant>) -> Option<Error> {
    if let Some(e) = ctx.err() {
        return Some(e);
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut done = std::pin::pin!(ctx.done());
    loop {
        if let Poll::Ready(e) = done.as_mut().poll(&mut cx) {
            return Some(e);
        }
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                Some(d - now)
            }
        };
        sleep(timeout);
    }
}

/// Waits until woken, or at most `timeout`.
fn sleep(timeout: Option<Duration>) {
    #[cfg(not(all(target_family = "wasm", not(target_feature = "atomics"))))]
    match timeout {
        None => thread::park(),
        Some(t) => thread::park_timeout(t),
    }
    // Without threads (wasm32-wasip1) parking returns at once and nobody
    // could unpark us, and nothing else fires `StdClock`: sleep towards its
    // alarm and fire it, so deadlines under `background()` end this wait.
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    crate::clock::std_clock::sleep_and_fire(timeout);
}

use std::future::Future;
