//! A small typical heap-free program, for the size table (feature
//! `no-alloc-minimal`, no allocator linked): a `static` root, a request
//! scope pinned in a task, a `LocalScope::with_timeout` under it fired by
//! the SysTick clock and awaited by the task, and a cancel of the root.

use core::cell::Cell;
use core::pin::pin;
use core::time::Duration;

use cancel_tree::{Error, LocalScope, StaticScope};

use crate::clock::CLOCK;
use crate::executor::{self, Task};

static ROOT: StaticScope = StaticScope::new();

/// Runs the program; `true` if it behaved.
pub fn run() -> bool {
    let start = CLOCK.ticks();
    let out = Cell::new(None);
    let mut fut = pin!(async {
        let request = pin!(LocalScope::new(ROOT.scope()));
        let request = request.into_ref().get();
        let timeout = pin!(LocalScope::with_timeout(
            request,
            &CLOCK,
            Duration::from_millis(10)
        ));
        let timeout = timeout.into_ref().get();
        out.set(Some(timeout.done().await));
    });
    let mut tasks = [Task::new(fut.as_mut())];
    let ran = executor::run(&mut tasks, || CLOCK.ticks(), start + 1000).is_ok();
    ROOT.scope().cancel();
    ran && out.get() == Some(Error::DeadlineExceeded) && ROOT.scope().is_cancelled()
}
