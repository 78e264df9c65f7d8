//! `Instant` arithmetic (saturating and checked add, saturating difference,
//! ordering), `ManualClock` advance/set and `with_timeout`'s deadline,
//! against plain u128 math. The check is `model::check_instant`, shared with
//! `tests/model_check.rs`.
//!
//! Run: `cargo +nightly fuzz run instant_math` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

fuzz_target!(|case: model::InstantCase| {
    model::check_instant(case);
});
