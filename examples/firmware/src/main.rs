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
//! With `no-alloc` instead of the default `scenarios`, the checks of the
//! heap-free API (`noalloc.rs`: `StaticScope`, `LocalScope`), with cancel-tree
//! built without any feature, and **no global allocator**: no `heap.rs`, no
//! embedded-alloc, no `alloc` crate in the build.
//!
//! Without either it builds the same skeleton with no cancel-tree code (the
//! baselines for `docs/embedded.md`'s size table; with or without `heap`),
//! or with `minimal` / `no-alloc-minimal`, a small typical cancel-tree
//! program on the heap / heap-free API.
#![no_std]
#![no_main]

#[cfg(all(feature = "no-alloc", feature = "heap"))]
compile_error!(
    "`no-alloc` is the build without a heap: it excludes `heap`, `scenarios`, `minimal`"
);
#[cfg(all(feature = "no-alloc", feature = "no-alloc-minimal"))]
compile_error!("`no-alloc` and `no-alloc-minimal` are two programs: pick one");
#[cfg(all(feature = "no-alloc-minimal", feature = "heap"))]
compile_error!("`no-alloc-minimal` is a build without a heap: it excludes `heap`, `minimal`");

#[cfg(feature = "heap")]
extern crate alloc;

#[cfg(feature = "scenarios")]
mod checks;
mod clock;
mod cpu;
mod cs;
mod executor;
#[cfg(feature = "heap")]
mod heap;
#[cfg(all(feature = "minimal", not(feature = "scenarios")))]
mod minimal;
#[cfg(feature = "no-alloc")]
mod noalloc;
#[cfg(feature = "no-alloc-minimal")]
mod noalloc_minimal;
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
    #[cfg(feature = "heap")]
    heap::init();
    let cp = cortex_m::Peripherals::take().unwrap();
    CLOCK.start(cp.SYST);
    hprintln!("cancel-tree firmware on {}", BOARD);
    #[cfg(feature = "heap")]
    hprintln!(
        "SysTick {} Hz from a {} MHz core clock; heap {} B",
        clock::TICK_HZ,
        clock::CORE_HZ / 1_000_000,
        heap::HEAP_SIZE
    );
    #[cfg(not(feature = "heap"))]
    hprintln!(
        "SysTick {} Hz from a {} MHz core clock; no heap (no global allocator linked)",
        clock::TICK_HZ,
        clock::CORE_HZ / 1_000_000
    );

    #[cfg(any(feature = "scenarios", feature = "no-alloc"))]
    {
        let mut report = report::Report::new();
        #[cfg(feature = "scenarios")]
        checks::run(&mut report);
        #[cfg(feature = "no-alloc")]
        noalloc::run(&mut report);
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

    #[cfg(not(any(feature = "scenarios", feature = "no-alloc")))]
    small()
}

/// The size-table builds: one small task on the executor, then a one-line
/// summary. With `minimal` the task uses cancel-tree's heap API
/// (`minimal.rs`), with `no-alloc-minimal` its heap-free API
/// (`noalloc_minimal.rs`); with neither it is an empty task and no
/// cancel-tree code is linked (with `heap`, the stub also makes one
/// allocation, so the allocator is linked).
#[cfg(not(any(feature = "scenarios", feature = "no-alloc")))]
fn small() -> ! {
    let start = CLOCK.ticks();
    // With the heap, one allocation, kept to the end (so the stub links the
    // allocator).
    #[cfg(feature = "heap")]
    let boxed = alloc::boxed::Box::new(start);
    #[cfg(feature = "minimal")]
    let (what, ok) = ("MINIMAL", minimal::run());
    #[cfg(feature = "no-alloc-minimal")]
    let (what, ok) = (
        "MINIMAL (heap-free API, no allocator)",
        noalloc_minimal::run(),
    );
    #[cfg(not(any(feature = "minimal", feature = "no-alloc-minimal")))]
    let (what, ok) = {
        let mut fut = core::pin::pin!(async {});
        let mut tasks = [executor::Task::new(fut.as_mut())];
        let ok = executor::run(&mut tasks, || CLOCK.ticks(), start + 1000).is_ok();
        #[cfg(feature = "heap")]
        let what = "STUB (no cancel-tree code)";
        #[cfg(not(feature = "heap"))]
        let what = "STUB (no cancel-tree code, no heap)";
        (what, ok)
    };
    #[cfg(feature = "heap")]
    let ticks = CLOCK.ticks() - *boxed;
    #[cfg(not(feature = "heap"))]
    let ticks = CLOCK.ticks() - start;
    let (stack, _) = stack::usage();
    #[cfg(feature = "heap")]
    {
        let c = heap::HEAP.counts();
        hprintln!(
            "{}: ok = {}, {} ticks, heap peak {} B in {} allocations, stack {} B",
            what,
            ok,
            ticks,
            c.peak,
            c.allocs,
            stack
        );
    }
    #[cfg(not(feature = "heap"))]
    hprintln!(
        "{}: ok = {}, {} ticks, no heap, stack {} B",
        what,
        ok,
        ticks,
        stack
    );
    report::exit(ok)
}

#[exception]
fn SysTick() {
    let _t = CLOCK.on_tick();
    #[cfg(feature = "scenarios")]
    checks::on_tick(_t);
    #[cfg(feature = "no-alloc")]
    noalloc::on_tick(_t);
}

#[exception]
fn PendSV() {
    #[cfg(feature = "scenarios")]
    checks::on_pendsv();
    #[cfg(feature = "no-alloc")]
    noalloc::on_pendsv();
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
