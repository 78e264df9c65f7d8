#!/usr/bin/env bash
# Firmware CI: builds examples/firmware for two Cortex-M targets and runs it
# under QEMU, where it checks cancel-tree on a real core model (interrupts,
# SysTick deadlines, WFI) and exits with its verdict.
#
#   thumbv7em-none-eabihf  Cortex-M4F  qemu -machine mps2-an386
#   thumbv6m-none-eabi     Cortex-M0   qemu -machine microbit   (no CAS: portable-atomic)
#
# Each target runs three configurations: the heap API's checks with
# cortex-m's critical-section implementation (what users link), the same
# with the firmware's own timing one (`measure-cs`, which also reports
# interrupt latency), and the heap-free API's checks (`no-alloc`: cancel-tree
# with no feature at all and NO global allocator; the script also checks
# that no allocator and no `alloc` crate code is linked into that build).
#
# The `measure-cs` runs print `latency: ...` lines (the longest
# interrupts-masked sections: the ISR fan-out and the timer-queue tables of
# docs/embedded.md); after all runs they are printed again, per target,
# under `=== firmware: latency tables (<target>)`, and a `measure-cs` run
# that printed none fails.
#
# Installs what it needs (rust targets; qemu-system-arm via apt). If QEMU
# cannot be installed it still builds everything, prints a loud
# "SKIPPED: firmware run (reason)" and exits 0; any build or check failure
# exits non-zero.
#
#   bash .ci/firmware.sh          # build + run (what CI does)
#   bash .ci/firmware.sh sizes    # also print the flash/RAM table of
#                                 # docs/embedded.md (needs llvm-size)
#
# The allocator check of the `no-alloc` build uses llvm-nm (or
# arm-none-eabi-nm) and llvm-dwarfdump when found; `cargo tree` is always
# checked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FW=$ROOT/examples/firmware
MODE=${1:-run}

export CARGO_TERM_COLOR=never
# The firmware's own target dir, so it never blocks the main build's lock.
export CARGO_TARGET_DIR=$FW/target
# The firmware's flags come from its build.rs/.cargo/config.toml; flags meant
# for the host build must not leak in.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET || true

TARGETS=(thumbv7em-none-eabihf thumbv6m-none-eabi)
declare -A MACHINE=([thumbv7em-none-eabihf]=mps2-an386 [thumbv6m-none-eabi]=microbit)
# Feature sets that are run: cortex-m's critical section, then the timing
# one, then the heap-free checks with no allocator.
NO_ALLOC="--no-default-features --features single-core-cs,no-alloc"
MEASURE="--no-default-features --features scenarios,measure-cs"
CONFIGS=("" "$MEASURE" "$NO_ALLOC")
TIMEOUT=120

step() { printf '\n=== firmware: %s (%s)\n' "$1" "$(date +%T)"; }

# The first of the given LLVM/binutils tools found (on PATH, or in the
# toolchain's llvm-tools), or nothing.
find_tool() {
    local c
    for c in "$@"; do
        if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
        c="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/$c"
        if [ -x "$c" ]; then echo "$c"; return; fi
    done
}

# Fails (returns 1) unless the build of target $1 with flags $2 links no
# global allocator and no code of the `alloc` crate: cancel-tree without its
# `alloc` feature and no embedded-alloc in the dependency graph; no
# allocator shim or `alloc::` symbol in the ELF; no compile unit of the
# `alloc` crate (or of an allocator crate) in its debug info.
check_no_allocator() {
    local t=$1 flags=$2 elf="$CARGO_TARGET_DIR/$1/release/cancel-tree-firmware" bad=0 nm dd hits tree
    local ea="not in the graph"
    # shellcheck disable=SC2086
    if ! tree=$(cargo tree -q -e features --target "$t" $flags -i cancel-tree); then
        echo "no-alloc: cargo tree failed"; bad=1
    fi
    if grep -q 'cancel-tree feature "alloc"' <<<"$tree"; then
        echo "no-alloc: cancel-tree is built with its \`alloc\` feature"; bad=1
    fi
    # shellcheck disable=SC2086
    if cargo tree -q --target "$t" $flags -i embedded-alloc >/dev/null 2>&1; then
        echo "no-alloc: embedded-alloc is in the dependency graph"; bad=1; ea="IN THE GRAPH"
    fi
    echo "no-alloc: cargo tree: cancel-tree features = [$(
        sed -n 's/.*cancel-tree feature "\([^"]*\)".*/\1/p' <<<"$tree" | sort -u | paste -sd, -
    )], embedded-alloc $ea"
    nm=$(find_tool llvm-nm arm-none-eabi-nm)
    if [ -n "$nm" ]; then
        hits=$("$nm" -C "$elf" | grep -E '__rust_alloc|__rust_dealloc|__rust_realloc|__rg_|__rdl_|(^|[^A-Za-z0-9_:])alloc::|embedded_alloc|linked_list_allocator' || true)
        if [ -n "$hits" ]; then
            echo "no-alloc: allocator / alloc symbols linked:"; echo "$hits" | head -20; bad=1
        else
            echo "no-alloc: symbols: no __rust_alloc/__rg_alloc/__rdl_*, no alloc:: symbol ($(basename "$nm"))"
        fi
    else
        echo "no-alloc: no llvm-nm / arm-none-eabi-nm: symbols not checked"
    fi
    dd=$(find_tool llvm-dwarfdump)
    if [ -n "$dd" ]; then
        hits=$("$dd" --debug-info "$elf" | grep -A3 DW_TAG_compile_unit | grep DW_AT_name |
            grep -E 'library/alloc/|embedded-alloc|linked_list_allocator' || true)
        if [ -n "$hits" ]; then
            echo "no-alloc: compile units of alloc / an allocator linked:"; echo "$hits"; bad=1
        else
            echo "no-alloc: debug info: no compile unit of the alloc crate or an allocator"
        fi
    else
        echo "no-alloc: no llvm-dwarfdump: compile units not checked"
    fi
    return $bad
}

step "toolchain"
if command -v rustup >/dev/null 2>&1; then
    rustup target add "${TARGETS[@]}"
fi

step "qemu"
skip_reason=""
if ! command -v qemu-system-arm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
        fi
        { $SUDO apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-system-arm; } ||
            echo "apt-get could not install qemu-system-arm"
    fi
fi
if ! command -v qemu-system-arm >/dev/null 2>&1; then
    skip_reason="qemu-system-arm is not installed and could not be installed"
else
    qemu-system-arm --version | head -1
    machines=$(qemu-system-arm -machine help)
    for t in "${TARGETS[@]}"; do
        if ! grep -q "^${MACHINE[$t]} " <<<"$machines"; then
            skip_reason="this qemu-system-arm has no '${MACHINE[$t]}' machine"
        fi
    done
fi

cd "$FW"
failed=0
# The `latency:` lines of each target's `measure-cs` run.
declare -A LATENCY=()
for t in "${TARGETS[@]}"; do
    for cfg in "${CONFIGS[@]}"; do
        label="$t${cfg:+ ($cfg)}"
        step "build $label"
        # shellcheck disable=SC2086
        cargo build --release --target "$t" $cfg
        if [ "$cfg" = "$NO_ALLOC" ]; then
            step "no allocator in $label"
            if ! check_no_allocator "$t" "$cfg"; then
                echo "firmware $label: FAILED (an allocator or alloc code is linked)"
                failed=1
            fi
        fi
        if [ -n "$skip_reason" ]; then
            continue
        fi
        step "run $label on qemu ${MACHINE[$t]}"
        log=$(mktemp)
        set +e
        # shellcheck disable=SC2086
        timeout "$TIMEOUT" cargo run -q --release --target "$t" $cfg </dev/null 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        set -e
        if [ "$rc" -eq 0 ] && grep -qx "ALL CHECKS PASSED" "$log"; then
            echo "firmware $label: ok"
        else
            if [ "$rc" -eq 124 ]; then
                echo "firmware $label: TIMED OUT after ${TIMEOUT}s"
            fi
            echo "firmware $label: FAILED (exit code $rc)"
            failed=1
        fi
        if [ "$cfg" = "$MEASURE" ]; then
            LATENCY[$t]=$(grep '^latency:' "$log" || true)
            if [ -z "${LATENCY[$t]}" ]; then
                echo "firmware $label: FAILED (no latency: lines)"
                failed=1
            fi
        fi
        rm -f "$log"
    done
done

if [ -z "$skip_reason" ]; then
    for t in "${TARGETS[@]}"; do
        step "latency tables ($t, QEMU ${MACHINE[$t]}, SysTick counts at the core clock)"
        echo "${LATENCY[$t]:-(none)}"
    done
fi

if [ "$MODE" = sizes ]; then
    step "sizes"
    size=$(find_tool llvm-size arm-none-eabi-size)
    if [ -z "$size" ] && command -v rustup >/dev/null 2>&1; then
        rustup component add llvm-tools >/dev/null 2>&1 || true
        size=$(find_tool llvm-size)
    fi
    if [ -z "$size" ]; then
        echo "no llvm-size / arm-none-eabi-size found: sizes not measured"
    else
        printf '| target | build | text | data | bss | run |\n|---|---|---:|---:|---:|---|\n'
        # stub/minimal/minimal-cause/full: the heap API, with the heap;
        # stub-noheap/noalloc-minimal/noalloc-full: the heap-free API, no
        # allocator linked.
        for t in "${TARGETS[@]}"; do
            for b in stub minimal minimal-cause full stub-noheap noalloc-minimal noalloc-full; do
                case $b in
                    stub) f="--no-default-features --features single-core-cs,heap" ;;
                    minimal) f="--no-default-features --features single-core-cs,minimal" ;;
                    minimal-cause) f="--no-default-features --features single-core-cs,minimal-cause" ;;
                    full) f="" ;;
                    stub-noheap) f="--no-default-features --features single-core-cs" ;;
                    noalloc-minimal) f="--no-default-features --features single-core-cs,no-alloc-minimal" ;;
                    noalloc-full) f="$NO_ALLOC" ;;
                esac
                # shellcheck disable=SC2086
                cargo build -q --release --target "$t" $f
                read -r text data bss _ < <("$size" "$CARGO_TARGET_DIR/$t/release/cancel-tree-firmware" | tail -1)
                run="-"
                if [ -z "$skip_reason" ] && [ "$b" != full ] && [ "$b" != noalloc-full ]; then
                    # shellcheck disable=SC2086
                    run=$(timeout "$TIMEOUT" cargo run -q --release --target "$t" $f </dev/null 2>&1 | tail -1) || failed=1
                fi
                printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$b" "$text" "$data" "$bss" "$run"
            done
        done
    fi
fi

if [ -n "$skip_reason" ]; then
    echo
    echo "##############################################################"
    echo "SKIPPED: firmware run ($skip_reason)"
    echo "   (the firmware was built for ${TARGETS[*]}, but not run)"
    echo "##############################################################"
    exit 0
fi
if [ "$failed" -ne 0 ]; then
    echo "firmware: FAILED"
    exit 1
fi
echo "firmware: all runs passed (${TARGETS[*]})"
