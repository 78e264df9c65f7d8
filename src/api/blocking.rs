//! Blocking waits (std): park the thread on a `Done` future.

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
        match deadline {
            None => thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                thread::park_timeout(d - now);
            }
        }
    }
}

use std::future::Future;
