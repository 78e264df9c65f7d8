//! Without the `std` feature the crate catches no panics: a waker or an
//! `after_func` closure that panics unwinds through the cancel, whose
//! `Drop`s must still finish the work and give back every reference. Run
//! with `cargo test --no-default-features --features alloc --test
//! unwind_without_std` (empty with `std`, where panics are caught).
#![cfg(all(feature = "alloc", not(feature = "std")))]

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as Cx, Wake, Waker};

use cancel_tree::Context;

struct Panicking;
impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        panic!("waker panics");
    }
}

struct Drops(Arc<AtomicUsize>);
impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A merged context reached through its other parent is cancelled from the
/// outer cancel's queue, holding the claim's reference; a panicking waker on
/// the merged context unwinds out of that forwarded cancel. The claim's
/// reference must still be given back, or the merged context and every
/// parent it holds leak.
#[test]
fn a_panic_in_a_forwarded_cancel_releases_the_claim() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, ah) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (b, bh) = Context::background()
        .with_value(Drops(dropped.clone()))
        .with_cancel();
    let (m, mh) = a.merge(&b);
    {
        let waker = Waker::from(Arc::new(Panicking));
        let mut done = pin!(m.done());
        assert!(done.as_mut().poll(&mut Cx::from_waker(&waker)).is_pending());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bh.cancel()));
        assert!(r.is_err(), "the waker's panic reaches the canceller");
        assert!(m.is_cancelled(), "forwarded before the panic");
    }
    drop((a, ah, b, bh, m, mh));
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "both parents freed");
}
