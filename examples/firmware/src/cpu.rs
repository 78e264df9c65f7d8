//! Which exception the core is handling.

/// The number of the exception being handled (0: thread mode; 14 PendSV,
/// 15 SysTick).
#[cfg_attr(
    not(any(feature = "heap", feature = "no-alloc", feature = "measure-cs")),
    allow(dead_code)
)]
pub fn ipsr() -> u32 {
    let r: u32;
    // SAFETY: reading IPSR has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, IPSR", out(reg) r, options(nomem, nostack, preserves_flags))
    };
    r
}
