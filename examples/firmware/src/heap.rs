//! The global allocator: embedded-alloc's linked-list heap in a static
//! array, wrapped to count allocations, and to notice any made from an
//! interrupt handler (cancel-tree allocates only when a context or an
//! `after_func` is created, and frees only when the last reference goes:
//! the firmware checks that none of that happens in its ISRs).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::mem::MaybeUninit;

use critical_section::Mutex;
use embedded_alloc::LlffHeap;

use crate::cs::Tag;

/// Heap size: 32 KiB on the MPS2 (4 MiB of RAM), 11.5 KiB on the micro:bit
/// (16 KiB of RAM in all; the rest is the statics, among them the clock's
/// timer wheel, and the stack, which the checks' "stack stayed within RAM"
/// watches). 11.5 KiB holds the latency measurement's 128 pending deadline
/// contexts (docs/embedded.md).
#[cfg(board = "mps2_an386")]
pub const HEAP_SIZE: usize = 32 * 1024;
/// See above.
#[cfg(board = "microbit")]
pub const HEAP_SIZE: usize = 11 * 1024 + 512;

/// Allocation counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// `alloc` calls.
    pub allocs: u32,
    /// `dealloc` calls.
    pub frees: u32,
    /// `alloc` calls from an exception/interrupt handler.
    pub isr_allocs: u32,
    /// `dealloc` calls from an exception/interrupt handler.
    pub isr_frees: u32,
    /// Bytes in use at the high-water mark.
    pub peak: usize,
}

/// The heap, with counters.
pub struct Heap {
    heap: LlffHeap,
    counts: Mutex<Cell<Counts>>,
}

impl Heap {
    const fn new() -> Heap {
        Heap {
            heap: LlffHeap::empty(),
            counts: Mutex::new(Cell::new(Counts {
                allocs: 0,
                frees: 0,
                isr_allocs: 0,
                isr_frees: 0,
                peak: 0,
            })),
        }
    }

    /// Bytes in use now.
    #[cfg_attr(not(feature = "scenarios"), allow(dead_code))]
    pub fn used(&self) -> usize {
        self.heap.used()
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        critical_section::with(|cs| self.counts.borrow(cs).get())
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        let used = self.heap.used();
        critical_section::with(|cs| {
            let cell = self.counts.borrow(cs);
            let mut c = cell.get();
            f(&mut c);
            c.peak = c.peak.max(used);
            cell.set(c);
        });
    }
}

/// `true` in an exception or interrupt handler (IPSR != 0).
pub fn in_handler() -> bool {
    ipsr() != 0
}

pub use crate::cpu::ipsr;

// SAFETY: delegates to LlffHeap, which is a correct allocator; the counters
// are behind a critical section.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        crate::cs::tag(Tag::Alloc);
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { self.heap.alloc(layout) };
        crate::cs::tag(Tag::None);
        let isr = in_handler();
        self.count(|c| {
            c.allocs += 1;
            c.isr_allocs += isr as u32;
        });
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let isr = in_handler();
        crate::cs::tag(Tag::Alloc);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.heap.dealloc(ptr, layout) };
        crate::cs::tag(Tag::None);
        self.count(|c| {
            c.frees += 1;
            c.isr_frees += isr as u32;
        });
    }
}

#[global_allocator]
pub static HEAP: Heap = Heap::new();

/// Hands the heap its memory. Call once, first thing.
pub fn init() {
    static mut MEMORY: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: called once, before any allocation; nothing else touches
    // MEMORY.
    unsafe { HEAP.heap.init(&raw mut MEMORY as usize, HEAP_SIZE) }
}
