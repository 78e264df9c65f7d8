//! The fuzzed state machine of `fuzz/fuzz_targets/state_machine.rs`, on
//! stable inside `cargo test`: pseudo-random byte strings from a fixed-seed
//! PRNG, decoded by `arbitrary` into operations, run on the library and on
//! the reference model in `tests/model/` with a full comparison after every
//! step.
//!
//! * `MODEL_CHECK_CASES=n` changes the number of random inputs (default 3000);
//!   `MODEL_CHECK_SEED=s` the seed.
//! * `MODEL_REPLAY=path` runs one input file (e.g. a fuzzer crash artifact)
//!   and prints its decoded operations.

mod model;

use std::path::Path;

#[global_allocator]
static ALLOC: model::CountingAlloc = model::CountingAlloc;

/// xorshift64*: small, fixed, good enough to spread bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An input of uniform bytes (the decoder's weights shape the mix).
    fn input(&mut self) -> Vec<u8> {
        let len = match self.below(4) {
            0 => self.below(64),
            1 | 2 => 64 + self.below(448),
            _ => 512 + self.below(1536),
        } as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_inputs_match_the_model() {
    let cases = env_u64("MODEL_CHECK_CASES", 3000);
    let seed = env_u64("MODEL_CHECK_SEED", 0x5eed_cafe_f00d_d00d);
    let mut rng = Rng(seed | 1);
    let mut stats = model::Stats::default();
    let start = std::time::Instant::now();
    for case in 0..cases {
        let data = rng.input();
        match std::panic::catch_unwind(|| model::run(&data)) {
            Ok(s) => stats.add(&s),
            Err(e) => {
                eprintln!("case {case} (seed {seed:#x}) failed; input bytes: {data:?}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("{cases} inputs in {:?}: {stats:#?}", start.elapsed());
    assert!(stats.deadlines_fired > 0 && stats.wakes > 0 && stats.after_funcs_ran > 0);
}

#[test]
fn empty_and_tiny_inputs() {
    model::run(&[]);
    for b in 0..=255u8 {
        model::run(&[b]);
        model::run(&[b, b, b, b, b]);
    }
}

/// Replays the fuzzer's checked-in seed corpus (and, if present, any crash
/// artifacts), so `cargo test` covers them too.
#[test]
fn fuzz_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for dir in ["corpus/state_machine", "artifacts/state_machine"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| model::run(&data));
                if let Err(e) = result {
                    eprintln!("{} failed", path.display());
                    std::panic::resume_unwind(e);
                }
            }
        }
    }
}

#[test]
fn replay_file_from_env() {
    let Ok(path) = std::env::var("MODEL_REPLAY") else {
        return;
    };
    let data = std::fs::read(&path).unwrap();
    let (flavor, ops) = model::decode(&data);
    eprintln!("teardown flavor {flavor}; {} ops:", ops.len());
    for (i, op) in ops.iter().enumerate() {
        eprintln!("  {i:3}: {op:?}");
    }
    model::run(&data);
}

#[test]
fn instant_math_matches_u128() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let edges = [
        0,
        1,
        2,
        4095,
        u64::MAX / 2,
        u64::MAX - 1_000_000_000,
        u64::MAX - 1,
        u64::MAX,
    ];
    for i in 0..20_000u64 {
        let pick = |rng: &mut Rng| {
            if rng.below(3) == 0 {
                edges[rng.below(edges.len() as u64) as usize]
            } else {
                rng.next()
            }
        };
        let case = model::InstantCase {
            a: pick(&mut rng),
            b: pick(&mut rng),
            secs: pick(&mut rng),
            subsec: rng.next() as u32,
            small: i % 2 == 0,
        };
        model::check_instant(case);
    }
}

#[test]
fn encoding_round_trips() {
    let mut rng = Rng(0xfeed_beef);
    for _ in 0..500 {
        let data = rng.input();
        let (flavor, ops) = model::decode(&data);
        let again = model::encode(flavor, &ops);
        assert_eq!(model::decode(&again), (flavor, ops));
    }
}

// ---- hand-written scenarios (also the fuzzer's named seeds) ----

use model::{AfExtra, At, CauseArg, Derive as D, Dur, Op};

/// Slot `i` exactly (the high bit turns off the live-context bias).
const fn s(i: u8) -> u8 {
    0x80 | i
}

/// Named operation sequences, each aimed at one rule. Slots: 0 and 1 are the
/// roots of clocks 0 and 1; every derivation appends a context slot (and a
/// handle, for cancellable kinds). The model checks everything after every
/// step; these only make sure the interesting paths are in the corpus.
fn scenarios() -> Vec<(&'static str, u8, Vec<Op>)> {
    use Op::*;
    let d = |ctx, how| Op::Derive { ctx, how };
    vec![
        (
            "nested_deadlines",
            0,
            vec![
                d(s(0), D::Timeout(Dur::Nanos(100))), // 2: queued
                d(s(2), D::Timeout(Dur::Nanos(50))),  // 3: queued
                d(s(3), D::Timeout(Dur::Nanos(70))),  // 4: plain (parent earlier)
                d(s(2), D::DeadlineCause(At::In(30), CauseArg::Custom)), // 5
                NewDone { ctx: s(4) },
                Poll { done: 0, waker: 0 },
                AfterFunc {
                    ctx: s(3),
                    extra: AfExtra::None,
                },
                Advance {
                    clock: 0,
                    by: Dur::Nanos(29),
                },
                Advance {
                    clock: 0,
                    by: Dur::Small(1),
                }, // 5 fires, custom cause
                Advance {
                    clock: 0,
                    by: Dur::Nanos(20),
                }, // 3 fires, 4 follows
                Poll { done: 0, waker: 1 },
                Advance {
                    clock: 0,
                    by: Dur::Nanos(60),
                }, // 2 fires
            ],
        ),
        (
            "cause_flows_through_values",
            1,
            vec![
                d(s(0), D::Cancel),                 // 2
                d(s(2), D::ValueA(7)),              // 3
                d(s(3), D::Cancel),                 // 4
                d(s(3), D::WithoutCancel),          // 5
                d(s(5), D::Timeout(Dur::Small(5))), // 6
                d(s(5), D::ValueB(9)),              // 7
                AfterFunc {
                    ctx: s(4),
                    extra: AfExtra::None,
                },
                AfterFunc {
                    ctx: s(3),
                    extra: AfExtra::None,
                },
                CancelWith {
                    handle: 0,
                    cause: CauseArg::Custom,
                },
                CancelWith {
                    handle: 0,
                    cause: CauseArg::Msg,
                }, // loses
                d(s(4), D::Cancel),                 // born cancelled
                d(s(4), D::Timeout(Dur::Small(3))), // born cancelled by parent
                Advance {
                    clock: 0,
                    by: Dur::Small(5),
                }, // 6 fires
            ],
        ),
        (
            "after_func_stop",
            2,
            vec![
                d(s(0), D::Cancel), // 2
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::None,
                },
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::None,
                },
                Stop { af: 0 },
                Stop { af: 0 },
                DropAfterFunc { af: 1 },
                DropCtx { ctx: s(2) },
                Cancel { handle: 0 },
                Stop { af: 1 },
                HandleContext { handle: 0 },
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::None,
                }, // already cancelled: runs at once
                Stop { af: 2 },
                AfterFunc {
                    ctx: s(0),
                    extra: AfExtra::None,
                }, // never cancelled: inert
                Stop { af: 3 },
                Stop { af: 3 },
            ],
        ),
        (
            "done_wakes_latest_waker",
            4,
            vec![
                d(s(0), D::Cancel),    // 2
                d(s(2), D::ValueA(1)), // 3
                NewDone { ctx: s(3) },
                Poll { done: 0, waker: 0 },
                Poll { done: 0, waker: 1 },
                NewDone { ctx: s(2) },
                Poll { done: 1, waker: 2 },
                NewDone { ctx: s(2) },
                Poll { done: 2, waker: 3 },
                DropDone { done: 2 },
                NewDone { ctx: s(0) },
                Poll { done: 2, waker: 3 },
                DropHandle { handle: 0 },
                Poll { done: 0, waker: 0 },
                Poll { done: 1, waker: 2 },
            ],
        ),
        (
            "pending_tracks_live_timeouts",
            8,
            vec![
                d(s(0), D::Timeout(Dur::Nanos(10))), // 2 (h0)
                d(s(1), D::Timeout(Dur::Nanos(10))), // 3 (h1)
                d(s(1), D::Deadline(At::In(20))),    // 4 (h2)
                Detach { handle: 1 },
                DropCtx { ctx: s(3) }, // unreferenced: leaves the queue
                CloneCtx { ctx: s(3) },
                Detach { handle: 1 },
                DropCtx { ctx: s(3) },
                DropCtx { ctx: s(3) },
                DropHandle { handle: 0 }, // cancelled: leaves the queue
                Advance {
                    clock: 1,
                    by: Dur::Nanos(25),
                },
            ],
        ),
        (
            "saturating_time",
            3,
            vec![
                d(s(0), D::Timeout(Dur::Max)),    // 2 at MAX
                d(s(0), D::Timeout(Dur::U64Max)), // 3 at MAX
                Advance {
                    clock: 0,
                    by: Dur::NearU64Max(0),
                }, // now = MAX - 0? saturates
                d(s(0), D::Deadline(At::Max)),    // born expired
                d(s(1), D::Deadline(At::Max)),    // 5
                Set {
                    clock: 1,
                    to: At::Abs(1000),
                },
                Set {
                    clock: 1,
                    to: At::Ago(10),
                }, // never backwards
                Set {
                    clock: 1,
                    to: At::Max,
                },
            ],
        ),
        (
            "leak_by_design",
            0,
            vec![
                d(s(0), D::Cancel), // 2
                Detach { handle: 0 },
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::None,
                },
                DropAfterFunc { af: 0 },
                DropCtx { ctx: s(2) },
            ],
        ),
        (
            "roots_share_a_clock",
            6,
            vec![
                NewRoot {
                    clock: 0,
                    tracked: true,
                }, // 2
                d(s(0), D::Timeout(Dur::Small(7))), // 3
                d(s(2), D::Timeout(Dur::Small(7))), // 4
                d(s(2), D::TimeoutCause(Dur::Small(3), CauseArg::Msg)), // 5
                DropCtx { ctx: s(2) },
                Advance {
                    clock: 0,
                    by: Dur::Small(7),
                },
            ],
        ),
        (
            "deadline_not_later_than_parent",
            5,
            vec![
                d(s(0), D::Timeout(Dur::Nanos(10))),                     // 2
                d(s(2), D::Deadline(At::In(10))),                        // 3: plain
                d(s(2), D::Deadline(At::In(9))),                         // 4: queued
                d(s(2), D::DeadlineCause(At::In(11), CauseArg::Custom)), // plain
                Advance {
                    clock: 0,
                    by: Dur::Nanos(9),
                },
                Advance {
                    clock: 0,
                    by: Dur::Small(1),
                },
            ],
        ),
        (
            "after_func_chains",
            2,
            vec![
                d(s(0), D::Cancel),                 // 2 (h0)
                d(s(0), D::Cancel),                 // 3 (h1)
                d(s(3), D::Cancel),                 // 4 (h2)
                d(s(0), D::Timeout(Dur::Small(4))), // 5 (h3)
                d(s(1), D::Cancel),                 // 6 (h4)
                // af0 on 2 owns 3's handle; af1 on 3 owns 4's handle and 3.
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::Chain(1),
                },
                AfterFunc {
                    ctx: s(3),
                    extra: AfExtra::Both(1),
                },
                // af2 on the timeout owns 6's handle (another clock's tree).
                AfterFunc {
                    ctx: s(5),
                    extra: AfExtra::Chain(2),
                },
                // af3 on a root: dropped at once, cancelling 2.
                DropCtx { ctx: s(3) },
                DropCtx { ctx: s(4) },
                AfterFunc {
                    ctx: s(0),
                    extra: AfExtra::Chain(0),
                },
                Advance {
                    clock: 0,
                    by: Dur::Small(4),
                },
            ],
        ),
        (
            "after_func_owns_its_handle",
            4,
            vec![
                d(s(0), D::Cancel),                 // 2 (h0)
                d(s(0), D::Timeout(Dur::Nanos(9))), // 3 (h1)
                AfterFunc {
                    ctx: s(2),
                    extra: AfExtra::Both(0),
                },
                Stop { af: 0 }, // drops the closure: cancels 2
                AfterFunc {
                    ctx: s(3),
                    extra: AfExtra::Both(0),
                },
                DropCtx { ctx: s(3) },
                DropAfterFunc { af: 1 },
                Advance {
                    clock: 0,
                    by: Dur::Nanos(9),
                }, // only the closure holds 3
            ],
        ),
        (
            "born_expired",
            9,
            vec![
                Advance {
                    clock: 1,
                    by: Dur::Nanos(50),
                },
                d(s(1), D::Deadline(At::Ago(0))),
                d(s(1), D::Deadline(At::Now)),
                d(s(1), D::TimeoutCause(Dur::Zero, CauseArg::Msg)),
                d(s(1), D::DeadlineCause(At::Ago(5), CauseArg::Canceled)),
                d(s(1), D::DeadlineCause(At::Abs(3), CauseArg::Custom)),
                AfterFunc {
                    ctx: s(6),
                    extra: AfExtra::None,
                },
                NewDone { ctx: s(5) },
                Poll { done: 0, waker: 1 },
            ],
        ),
    ]
}

#[test]
fn scenarios_match_the_model() {
    for (name, flavor, ops) in scenarios() {
        let data = model::encode(flavor, &ops);
        assert_eq!(model::decode(&data), (flavor, ops), "{name}");
        match std::panic::catch_unwind(|| model::run(&data)) {
            Ok(st) => eprintln!(
                "{name}: {} steps, {} effective, {} fired, {} wakes, {} after_funcs ran, \
                 {} stops won, leftover {}",
                st.steps,
                st.effective,
                st.deadlines_fired,
                st.wakes,
                st.after_funcs_ran,
                st.stops_won,
                st.leftover_runs
            ),
            Err(e) => {
                eprintln!("scenario {name} failed");
                std::panic::resume_unwind(e);
            }
        }
    }
}

/// `WRITE_SEEDS=1 cargo test --test model_check write_seed_corpus` writes the
/// scenarios to `fuzz/corpus/state_machine/scenario-*`.
#[test]
fn write_seed_corpus() {
    if std::env::var_os("WRITE_SEEDS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/state_machine");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, flavor, ops) in scenarios() {
        std::fs::write(
            dir.join(format!("scenario-{name}")),
            model::encode(flavor, &ops),
        )
        .unwrap();
    }
}
