//! Check results over semihosting, and the exit code QEMU returns.

use core::fmt;

use cortex_m_semihosting::{debug, hprintln};

/// Counts passed and failed checks.
#[cfg_attr(
    not(any(feature = "scenarios", feature = "no-alloc")),
    allow(dead_code)
)]
pub struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    /// No checks yet.
    #[cfg_attr(
        not(any(feature = "scenarios", feature = "no-alloc")),
        allow(dead_code)
    )]
    pub const fn new() -> Report {
        Report {
            passed: 0,
            failed: 0,
        }
    }

    /// Records one check and prints it with `detail`.
    #[cfg_attr(
        not(any(feature = "scenarios", feature = "no-alloc")),
        allow(dead_code)
    )]
    pub fn check(&mut self, name: &str, ok: bool, detail: fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let tag = if ok { "PASS" } else { "FAIL" };
        hprintln!("[{}] {}: {}", tag, name, detail);
    }

    /// Prints the totals and exits QEMU: success only if every check passed.
    #[cfg_attr(
        not(any(feature = "scenarios", feature = "no-alloc")),
        allow(dead_code)
    )]
    pub fn finish(self) -> ! {
        hprintln!("firmware: {} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && self.passed > 0 {
            hprintln!("ALL CHECKS PASSED");
            exit(true)
        } else {
            hprintln!("CHECKS FAILED");
            exit(false)
        }
    }
}

/// Ends the QEMU run with a success or failure exit code.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (real hardware, no debugger).
    loop {
        cortex_m::asm::bkpt();
    }
}
