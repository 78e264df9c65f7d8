//! Stack high-water mark: fill the free RAM below the stack with a pattern
//! at boot, and later find the lowest word that changed.

const PATTERN: u32 = 0x5A5A_A5A5;

unsafe extern "C" {
    /// cortex-m-rt: the end of .bss/.uninit (the lowest free RAM address).
    static mut __sheap: u32;
    /// cortex-m-rt: the initial stack pointer (top of RAM).
    static _stack_start: u32;
}

fn bottom() -> *mut u32 {
    &raw mut __sheap
}

fn top() -> usize {
    &raw const _stack_start as usize
}

/// Fills the unused stack area (from the end of static RAM up to 64 bytes
/// below the current stack pointer) with the pattern.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom();
    while (p as usize) < sp - 64 {
        // SAFETY: RAM between the end of the statics and the live stack is
        // unused (nothing below the stack pointer is live).
        unsafe {
            p.write_volatile(PATTERN);
            p = p.add(1);
        }
    }
}

/// Bytes of stack used at the deepest point so far, and bytes available.
pub fn usage() -> (usize, usize) {
    let mut p = bottom();
    let top = top();
    // SAFETY: reading the painted area; the stack never went below it
    // (otherwise it overflowed into the statics and we have bigger problems).
    unsafe {
        while (p as usize) < top && p.read_volatile() == PATTERN {
            p = p.add(1);
        }
    }
    (top - p as usize, top - bottom() as usize)
}
