//! Task groups: Go's `errgroup` over this crate's contexts, in three forms
//! that share one model (a derived context, first error cancels it, wait
//! for every task, a limit, a panic policy).
//!
//! * `in_task`: [`Group`](crate::Group), a future that polls its tasks
//!   itself (any executor, no `std`, tasks may borrow).
//! * `spawned`: [`SpawnGroup`](crate::SpawnGroup), tasks handed to an
//!   executor through `spawn`'s [`Spawn`](crate::Spawn) trait.
//! * `threads`: [`ThreadGroup`](crate::ThreadGroup), one scoped thread per
//!   task (std).
//!
//! Shared parts: `ledger` (counts, limit, first error, results), `ending`
//! (how a task ended, panic catching, the causes for abnormal endings),
//! `task_set` (the in-task group's one-allocation tasks and ready list),
//! `waiters` (the spawned group's waiting futures), `locked` (a value
//! behind the crate's lock).

pub(crate) mod ending;
pub(crate) mod in_task;
pub(crate) mod ledger;
pub(crate) mod locked;
pub(crate) mod spawn;
pub(crate) mod spawned;
pub(crate) mod task_set;
#[cfg(feature = "std")]
pub(crate) mod threads;
pub(crate) mod waiters;
