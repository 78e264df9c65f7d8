//! A small typical cancel-tree program, for the size table: a timeout under
//! a cancellable context, fired by the SysTick clock and awaited by a task,
//! an `after_func`, and a cancel (with a message cause under
//! `minimal-cause`).

use core::cell::Cell;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use cancel_tree::{Context, Error};

use crate::clock::CLOCK;
use crate::executor::{self, Task};

static AFTER_FUNC_RAN: AtomicBool = AtomicBool::new(false);

/// Runs the program; `true` if it behaved.
pub fn run() -> bool {
    let start = CLOCK.ticks();
    let root = Context::background_with_clock(&CLOCK);
    let (ctx, handle) = root.with_cancel();
    let (timeout, _t) = ctx.with_timeout(Duration::from_millis(10));
    let _af = timeout.after_func(|| AFTER_FUNC_RAN.store(true, Ordering::Release));
    let out = Cell::new(None);
    let mut fut = pin!(async { out.set(Some(timeout.done().await)) });
    let mut tasks = [Task::new(fut.as_mut())];
    let ran = executor::run(&mut tasks, || CLOCK.ticks(), start + 1000).is_ok();
    #[cfg(feature = "minimal-cause")]
    handle.cancel_with(cancel_tree::Cause::msg("finished"));
    #[cfg(not(feature = "minimal-cause"))]
    handle.cancel();
    ran && out.get() == Some(Error::DeadlineExceeded)
        && AFTER_FUNC_RAN.load(Ordering::Acquire)
        && ctx.is_cancelled()
}
