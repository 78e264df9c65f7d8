#!/usr/bin/env bash
# Firmware CI: builds examples/firmware for two Cortex-M targets and runs it
# under QEMU, where it checks cancel-tree on a real core model (interrupts,
# SysTick deadlines, WFI) and exits with its verdict.
#
#   thumbv7em-none-eabihf  Cortex-M4F  qemu -machine mps2-an386
#   thumbv6m-none-eabi     Cortex-M0   qemu -machine microbit   (no CAS: portable-atomic)
#
# Each target runs twice: with cortex-m's critical-section implementation
# (what users link) and with the firmware's own timing one (`measure-cs`,
# which also reports interrupt latency).
#
# Installs what it needs (rust targets; qemu-system-arm via apt). If QEMU
# cannot be installed it still builds everything, prints a loud
# "SKIPPED: firmware run (reason)" and exits 0; any build or check failure
# exits non-zero.
#
#   bash .ci/firmware.sh          # build + run (what CI does)
#   bash .ci/firmware.sh sizes    # also print the flash/RAM table of
#                                 # docs/embedded.md (needs llvm-size)
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
# Feature sets that are run: cortex-m's critical section, then the timing one.
CONFIGS=("" "--no-default-features --features scenarios,measure-cs")
TIMEOUT=120

step() { printf '\n=== firmware: %s (%s)\n' "$1" "$(date +%T)"; }

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
for t in "${TARGETS[@]}"; do
    for cfg in "${CONFIGS[@]}"; do
        label="$t${cfg:+ ($cfg)}"
        step "build $label"
        # shellcheck disable=SC2086
        cargo build --release --target "$t" $cfg
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
        rm -f "$log"
    done
done

if [ "$MODE" = sizes ]; then
    step "sizes"
    size=""
    for c in llvm-size "$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-size" arm-none-eabi-size; do
        if command -v "$c" >/dev/null 2>&1; then size=$c; break; fi
    done
    if [ -z "$size" ] && command -v rustup >/dev/null 2>&1; then
        rustup component add llvm-tools >/dev/null 2>&1 || true
        c="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-size"
        if [ -x "$c" ]; then size=$c; fi
    fi
    if [ -z "$size" ]; then
        echo "no llvm-size / arm-none-eabi-size found: sizes not measured"
    else
        printf '| target | build | text | data | bss | run |\n|---|---|---:|---:|---:|---|\n'
        for t in "${TARGETS[@]}"; do
            for b in stub minimal minimal-cause full; do
                case $b in
                    stub) f="--no-default-features --features single-core-cs" ;;
                    minimal) f="--no-default-features --features single-core-cs,minimal" ;;
                    minimal-cause) f="--no-default-features --features single-core-cs,minimal-cause" ;;
                    full) f="" ;;
                esac
                # shellcheck disable=SC2086
                cargo build -q --release --target "$t" $f
                read -r text data bss _ < <("$size" "$CARGO_TARGET_DIR/$t/release/cancel-tree-firmware" | tail -1)
                run="-"
                if [ -z "$skip_reason" ] && [ "$b" != full ]; then
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
