/work/main/target-old/wasm32-wasip1/release/deps/cancel_tree-5e61c28028bbdc25.d: src/lib.rs src/api/mod.rs src/api/after_func.rs src/api/blocking.rs src/api/cancel_handle.rs src/api/context.rs src/api/done.rs src/api/ext.rs src/api/group/mod.rs src/api/group/ending.rs src/api/group/in_task.rs src/api/group/ledger.rs src/api/group/locked.rs src/api/group/spawn.rs src/api/group/spawned.rs src/api/group/task_set.rs src/api/group/threads.rs src/api/group/waiters.rs src/api/local.rs src/api/run.rs src/interop/mod.rs src/clock/mod.rs src/clock/contract.rs src/clock/manual.rs src/clock/std_clock.rs src/clock/timer_queue.rs src/raw/mod.rs src/raw/arc.rs src/raw/list.rs src/raw/lock.rs src/raw/panic.rs src/raw/sync.rs src/tree/mod.rs src/tree/after_func.rs src/tree/attach.rs src/tree/cancel.rs src/tree/children.rs src/tree/deadline.rs src/tree/merge.rs src/tree/node.rs src/tree/node_cache.rs src/tree/release.rs src/tree/state_word.rs src/tree/waiter_list.rs src/types/mod.rs src/types/cause.rs src/types/error.rs src/types/instant.rs

/work/main/target-old/wasm32-wasip1/release/deps/libcancel_tree-5e61c28028bbdc25.rlib: src/lib.rs src/api/mod.rs src/api/after_func.rs src/api/blocking.rs src/api/cancel_handle.rs src/api/context.rs src/api/done.rs src/api/ext.rs src/api/group/mod.rs src/api/group/ending.rs src/api/group/in_task.rs src/api/group/ledger.rs src/api/group/locked.rs src/api/group/spawn.rs src/api/group/spawned.rs src/api/group/task_set.rs src/api/group/threads.rs src/api/group/waiters.rs src/api/local.rs src/api/run.rs src/interop/mod.rs src/clock/mod.rs src/clock/contract.rs src/clock/manual.rs src/clock/std_clock.rs src/clock/timer_queue.rs src/raw/mod.rs src/raw/arc.rs src/raw/list.rs src/raw/lock.rs src/raw/panic.rs src/raw/sync.rs src/tree/mod.rs src/tree/after_func.rs src/tree/attach.rs src/tree/cancel.rs src/tree/children.rs src/tree/deadline.rs src/tree/merge.rs src/tree/node.rs src/tree/node_cache.rs src/tree/release.rs src/tree/state_word.rs src/tree/waiter_list.rs src/types/mod.rs src/types/cause.rs src/types/error.rs src/types/instant.rs

/work/main/target-old/wasm32-wasip1/release/deps/libcancel_tree-5e61c28028bbdc25.rmeta: src/lib.rs src/api/mod.rs src/api/after_func.rs src/api/blocking.rs src/api/cancel_handle.rs src/api/context.rs src/api/done.rs src/api/ext.rs src/api/group/mod.rs src/api/group/ending.rs src/api/group/in_task.rs src/api/group/ledger.rs src/api/group/locked.rs src/api/group/spawn.rs src/api/group/spawned.rs src/api/group/task_set.rs src/api/group/threads.rs src/api/group/waiters.rs src/api/local.rs src/api/run.rs src/interop/mod.rs src/clock/mod.rs src/clock/contract.rs src/clock/manual.rs src/clock/std_clock.rs src/clock/timer_queue.rs src/raw/mod.rs src/raw/arc.rs src/raw/list.rs src/raw/lock.rs src/raw/panic.rs src/raw/sync.rs src/tree/mod.rs src/tree/after_func.rs src/tree/attach.rs src/tree/cancel.rs src/tree/children.rs src/tree/deadline.rs src/tree/merge.rs src/tree/node.rs src/tree/node_cache.rs src/tree/release.rs src/tree/state_word.rs src/tree/waiter_list.rs src/types/mod.rs src/types/cause.rs src/types/error.rs src/types/instant.rs

src/lib.rs:
src/api/mod.rs:
src/api/after_func.rs:
src/api/blocking.rs:
src/api/cancel_handle.rs:
src/api/context.rs:
src/api/done.rs:
src/api/ext.rs:
src/api/group/mod.rs:
src/api/group/ending.rs:
src/api/group/in_task.rs:
src/api/group/ledger.rs:
src/api/group/locked.rs:
src/api/group/spawn.rs:
src/api/group/spawned.rs:
src/api/group/task_set.rs:
src/api/group/threads.rs:
src/api/group/waiters.rs:
src/api/local.rs:
src/api/run.rs:
src/interop/mod.rs:
src/clock/mod.rs:
src/clock/contract.rs:
src/clock/manual.rs:
src/clock/std_clock.rs:
src/clock/timer_queue.rs:
src/raw/mod.rs:
src/raw/arc.rs:
src/raw/list.rs:
src/raw/lock.rs:
src/raw/panic.rs:
src/raw/sync.rs:
src/tree/mod.rs:
src/tree/after_func.rs:
src/tree/attach.rs:
src/tree/cancel.rs:
src/tree/children.rs:
src/tree/deadline.rs:
src/tree/merge.rs:
src/tree/node.rs:
src/tree/node_cache.rs:
src/tree/release.rs:
src/tree/state_word.rs:
src/tree/waiter_list.rs:
src/types/mod.rs:
src/types/cause.rs:
src/types/error.rs:
src/types/instant.rs:
