//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

/// A waker that counts its wakes.
#[derive(Default)]
pub struct CountingWaker(pub AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let c = Arc::new(CountingWaker::default());
    (c.clone(), Waker::from(c))
}

pub fn wakes(c: &CountingWaker) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// Polls once with `waker`.
pub fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    let mut cx = TaskContext::from_waker(waker);
    f.poll(&mut cx)
}

/// A minimal thread-parking executor.
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Runs `f` on a thread with a small stack (bytes) and returns its result.
///
/// On wasm, which has no threads, `f` runs on the one stack: 1 MiB (rustc's
/// default there), still far too small for recursion over the million-node
/// trees these tests build.
pub fn on_small_stack<T: Send + 'static>(
    bytes: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    if cfg!(target_family = "wasm") {
        let _ = bytes;
        return f();
    }
    std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("thread panicked")
}

/// A custom error for cause tests.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct MyErr(pub &'static str);

impl std::fmt::Display for MyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "my error: {}", self.0)
    }
}

impl std::error::Error for MyErr {}

/// Iteration counts: full natively, a few under Miri (which is ~1000x slower
/// and explores interleavings differently anyway).
pub const fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        if n < 4 { n } else { 4 }
    } else {
        n
    }
}
