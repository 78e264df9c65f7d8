//! cancel-tree on bare-metal Cortex-M, under QEMU, checking its own results.
//!
//! * thumbv7em-none-eabihf: `-machine mps2-an386` (Cortex-M4F), features
//!   `alloc`.
//! * thumbv6m-none-eabi: `-machine microbit` (nRF51822, Cortex-M0, no
//!   compare-and-swap), features `alloc, portable-atomic`.
//!
//! A SysTick-driven [`cancel_tree::Clock`] (`clock.rs`), a small WFI
//! executor (`executor.rs`), a counting heap (`heap.rs`), and the checks
//! (`checks.rs`). Output goes through semihosting; the exit code is the
//! verdict, and the last line is `ALL CHECKS PASSED` when every check passed.
//!
//! Without the default `scenarios` feature it builds the same skeleton with
//! no cancel-tree code (the baseline for `docs/embedded.md`'s size table),
//! or with `minimal`, a small typical cancel-tree program.
#![no_std]
#![no_main]

extern crate alloc;

#[cfg(feature = "scenarios")]
mod checks;
mod clock;
mod cs;
mod executor;
mod heap;
#[cfg(all(feature = "minimal", not(feature = "scenarios")))]
mod minimal;
mod report;
mod stack;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::hprintln;

use clock::CLOCK;

#[cfg(board = "mps2_an386")]
const BOARD: &str = "QEMU mps2-an386, Cortex-M4F (thumbv7em-none-eabihf)";
#[cfg(board = "microbit")]
const BOARD: &str = "QEMU microbit (nRF51822), Cortex-M0 (thumbv6m-none-eabi)";

#[entry]
fn main() -> ! {
    stack::paint();
    heap::init();
    let cp = cortex_m::Peripherals::take().unwrap();
    CLOCK.start(cp.SYST);
    hprintln!("cancel-tree firmware on {}", BOARD);
    hprintln!(
        "SysTick {} Hz from a {} MHz core clock; heap {} B",
        clock::TICK_HZ,
        clock::CORE_HZ / 1_000_000,
        heap::HEAP_SIZE
    );

    #[cfg(feature = "scenarios")]
    {
        let mut report = report::Report::new();
        checks::run(&mut report);
        let (used, avail) = stack::usage();
        hprintln!(
            "stack: {} B used at the deepest, of {} B free RAM",
            used,
            avail
        );
        report.check(
            "stack stayed within RAM",
            used < avail,
            format_args!("{} B of {} B", used, avail),
        );
        report.finish()
    }

    #[cfg(not(feature = "scenarios"))]
    small()
}

/// The size-table builds: one small task on the executor, then a one-line
/// summary. With `minimal` the task uses cancel-tree (`minimal.rs`); with no
/// feature it is an empty task and no cancel-tree code is linked.
#[cfg(not(feature = "scenarios"))]
fn small() -> ! {
    let start = CLOCK.ticks();
    let boxed = alloc::boxed::Box::new(start);
    #[cfg(feature = "minimal")]
    let (what, ok) = ("MINIMAL", minimal::run());
    #[cfg(not(feature = "minimal"))]
    let (what, ok) = {
        let mut fut = core::pin::pin!(async {});
        let mut tasks = [executor::Task::new(fut.as_mut())];
        let ok = executor::run(&mut tasks, || CLOCK.ticks(), start + 1000).is_ok();
        ("STUB (no cancel-tree code)", ok)
    };
    let ticks = CLOCK.ticks() - *boxed;
    let c = heap::HEAP.counts();
    let (stack, _) = stack::usage();
    hprintln!(
        "{}: ok = {}, {} ticks, heap peak {} B in {} allocations, stack {} B",
        what,
        ok,
        ticks,
        c.peak,
        c.allocs,
        stack
    );
    report::exit(ok)
}

#[exception]
fn SysTick() {
    let _t = CLOCK.on_tick();
    #[cfg(feature = "scenarios")]
    checks::on_tick(_t);
}

#[exception]
fn PendSV() {
    #[cfg(feature = "scenarios")]
    checks::on_pendsv();
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    hprintln!("HARDFAULT: {:?}", ef);
    hprintln!("CHECKS FAILED");
    report::exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    hprintln!("unexpected exception/interrupt {}", irqn);
    hprintln!("CHECKS FAILED");
    report::exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("PANIC: {}", info);
    hprintln!("CHECKS FAILED");
    report::exit(false)
}
