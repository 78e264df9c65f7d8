//! The cancellation tree as a state machine: operations decoded from the
//! input run on the library and on the reference model in
//! `tests/model/mod.rs` (shared with `tests/model_check.rs`), which compares
//! every context's err, cause, deadline and values, wake and after_func
//! counts, `ManualClock::pending()` and live values/causes/roots after every
//! step, then checks that a run leaving nothing reachable freed every
//! allocation it made.
//!
//! Run: `cargo +nightly fuzz run state_machine` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

#[global_allocator]
static ALLOC: model::CountingAlloc = model::CountingAlloc;

/// LeakSanitizer off by default: some inputs leak by design (an
/// `after_func` registration keeps its scope alive until the scope ends, and
/// a scope whose handle was detached under a root never ends). The model
/// knows which runs those are; every other run is checked exactly by
/// `CountingAlloc` (net allocations on the thread back to zero). ASan's other
/// checks (use after free, double free, overflows) stay on.
#[unsafe(no_mangle)]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_leaks=0".as_ptr()
}

fuzz_target!(|data: &[u8]| {
    model::run(data);
});
