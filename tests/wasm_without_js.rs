//! wasm32-unknown-unknown with `std` but without `js`: trees under
//! `background()` have no clock there (std has none), so deadlines are
//! reported and never fire, and nothing panics. Run in node by
//! wasm-bindgen-test-runner (`.ci/wasm.sh`).
#![cfg(all(target_family = "wasm", target_os = "unknown", not(feature = "js")))]

use std::time::Duration;

use cancel_tree::{Context, Error, Instant, ManualClock};
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

/// Resolves after `ms` on the host's `setTimeout`.
async fn sleep_ms(ms: i32) {
    let promise = Promise::new(&mut |resolve, _reject| {
        let set_timeout: Function = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .expect("setTimeout")
            .into();
        set_timeout
            .call2(&js_sys::wasm_bindgen::JsValue::NULL, &resolve, &ms.into())
            .expect("setTimeout call");
    });
    JsFuture::from(promise).await.expect("timer promise");
}

#[wasm_bindgen_test]
async fn background_deadlines_are_reported_and_never_fire() {
    let root = Context::background();
    assert_eq!(root.now(), Instant::ZERO);
    let (ctx, _cancel) = root.with_timeout(Duration::from_millis(1));
    assert_eq!(
        ctx.deadline(),
        Some(Instant::ZERO + Duration::from_millis(1))
    );
    let (max, _c) = root.with_timeout(Duration::MAX);
    assert_eq!(max.deadline(), Some(Instant::MAX));
    sleep_ms(20).await;
    assert_eq!((ctx.err(), max.err()), (None, None));
    // Cancelling still works, and so does a clock of one's own.
    let (c, cancel) = ctx.with_cancel();
    cancel.cancel();
    assert_eq!(c.err(), Some(Error::Canceled));
    let clock = ManualClock::new();
    let (d, _c) =
        Context::background_with_clock(clock.clone()).with_timeout(Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(d.err(), Some(Error::DeadlineExceeded));
}
