//! Interrupt latency: with the `measure-cs` feature, the firmware provides
//! its own single-core `critical-section` implementation — the same as
//! cortex-m's `critical-section-single-core` (save PRIMASK, mask interrupts,
//! restore PRIMASK) — that also times every outermost section (the ones
//! that actually mask interrupts) with the SysTick counter, in core clock
//! counts.
//!
//! Sections the firmware itself takes for the allocator or to sleep (WFI
//! with interrupts masked, by design) are tagged with [`Tag`] and kept
//! apart, so the maximum reported is cancel-tree's (plus the few
//! instructions of this firmware's clock and executor inside it).
//!
//! Without `measure-cs` every function here is a no-op and cortex-m's
//! implementation is linked.

#[cfg(all(feature = "measure-cs", feature = "single-core-cs"))]
compile_error!(
    "features `measure-cs` and `single-core-cs` both provide the critical section: pick one"
);
#[cfg(not(any(feature = "measure-cs", feature = "single-core-cs")))]
compile_error!("enable `single-core-cs` (cortex-m's critical section) or `measure-cs`");

/// What thread-mode code is inside, for sections it masks on purpose.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[cfg_attr(not(feature = "measure-cs"), allow(dead_code))]
pub enum Tag {
    /// Ordinary code (cancel-tree, the clock, the executor's bookkeeping).
    None = 0,
    /// The global allocator.
    Alloc = 1,
    /// The executor's check-then-WFI.
    Sleep = 2,
}

/// The longest interrupts-masked sections seen since the last [`reset`].
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(feature = "measure-cs"), allow(dead_code))]
pub struct Stats {
    /// Outermost sections timed (untagged).
    pub count: u32,
    /// The longest untagged one, in SysTick (core clock) counts.
    pub max: u32,
    /// IPSR where that one ran (0: thread mode, 14 PendSV, 15 SysTick).
    pub max_ipsr: u32,
    /// The longest allocator section.
    pub alloc_max: u32,
}

#[cfg(feature = "measure-cs")]
mod imp {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicU8, Ordering};

    use cortex_m::peripheral::SYST;
    use cortex_m::register::primask;
    use critical_section::{Impl, RawRestoreState, set_impl};

    use super::{Stats, Tag};

    /// State only touched with interrupts masked (single core).
    struct Masked<T>(UnsafeCell<T>);
    // SAFETY: every access happens with PRIMASK set on a single core.
    unsafe impl<T> Sync for Masked<T> {}

    static START: Masked<u32> = Masked(UnsafeCell::new(0));
    static STATS: Masked<Stats> = Masked(UnsafeCell::new(Stats {
        count: 0,
        max: 0,
        max_ipsr: 0,
        alloc_max: 0,
    }));
    pub(super) static TAG: AtomicU8 = AtomicU8::new(Tag::None as u8);

    struct MeasuredCriticalSection;
    set_impl!(MeasuredCriticalSection);

    // SAFETY: a single-core PRIMASK critical section, exactly cortex-m's:
    // interrupts stay masked from `acquire` to the matching `release`, and
    // nested sections restore the state they found.
    unsafe impl Impl for MeasuredCriticalSection {
        unsafe fn acquire() -> RawRestoreState {
            let restore = primask::read_raw();
            cortex_m::interrupt::disable();
            if restore & 1 == 0 {
                // Outermost: interrupts were enabled until now.
                // SAFETY: interrupts are masked.
                unsafe { *START.0.get() = SYST::get_current() };
            }
            restore
        }

        unsafe fn release(restore: RawRestoreState) {
            if restore & 1 == 0 {
                let end = SYST::get_current();
                // SAFETY: interrupts are still masked.
                unsafe {
                    let start = *START.0.get();
                    // SysTick counts down and reloads; a section shorter
                    // than one tick wraps at most once.
                    let counts = if start >= end {
                        start - end
                    } else {
                        start + SYST::get_reload() + 1 - end
                    };
                    let s = &mut *STATS.0.get();
                    let tag = TAG.load(Ordering::Relaxed);
                    let thread = crate::cpu::ipsr() == 0;
                    if thread && tag == Tag::Alloc as u8 {
                        s.alloc_max = s.alloc_max.max(counts);
                    } else if thread && tag == Tag::Sleep as u8 {
                        // WFI with interrupts masked: not a latency.
                    } else {
                        s.count += 1;
                        if counts > s.max {
                            s.max = counts;
                            s.max_ipsr = crate::cpu::ipsr();
                        }
                    }
                }
            }
            // SAFETY: restores the state `acquire` found.
            unsafe { primask::write_raw(restore) };
        }
    }

    #[cfg_attr(not(feature = "scenarios"), allow(dead_code))]
    pub(super) fn reset() {
        cortex_m::interrupt::free(|_| {
            // SAFETY: interrupts are masked.
            unsafe { *STATS.0.get() = Stats::default() }
        });
    }

    #[cfg_attr(not(feature = "scenarios"), allow(dead_code))]
    pub(super) fn stats() -> Stats {
        // SAFETY: interrupts are masked.
        cortex_m::interrupt::free(|_| unsafe { *STATS.0.get() })
    }
}

/// Tags the sections thread-mode code takes until the next `tag(Tag::None)`.
#[inline(always)]
pub fn tag(_t: Tag) {
    #[cfg(feature = "measure-cs")]
    imp::TAG.store(_t as u8, core::sync::atomic::Ordering::Relaxed);
}

/// Forgets the sections seen so far.
#[cfg_attr(
    not(all(feature = "measure-cs", feature = "scenarios")),
    allow(dead_code)
)]
pub fn reset() {
    #[cfg(feature = "measure-cs")]
    imp::reset();
}

/// The sections seen since the last [`reset`] (all zero without
/// `measure-cs`).
#[cfg_attr(
    not(all(feature = "measure-cs", feature = "scenarios")),
    allow(dead_code)
)]
pub fn stats() -> Stats {
    #[cfg(feature = "measure-cs")]
    return imp::stats();
    #[cfg(not(feature = "measure-cs"))]
    Stats::default()
}
