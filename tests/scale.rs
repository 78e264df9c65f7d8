//! Semantic 12: nothing recurses with depth or width. A 10,000,000-deep chain
//! and a 1,000,000-wide fan-out, cancelled, looked up and dropped on a
//! 256 KiB stack.

mod common;

use cancel_tree::{Context, Error};
use common::on_small_stack;

const SMALL_STACK: usize = 256 * 1024;

#[derive(Debug, PartialEq)]
struct Top(u32);

#[test]
#[cfg_attr(miri, ignore = "10M / 1M nodes: native only")]
fn ten_million_deep_chain() {
    on_small_stack(SMALL_STACK, || {
        let (root, cancel) = Context::background().with_value(Top(1)).with_cancel();
        let mut leaf = root.clone();
        for _ in 0..10_000_000 {
            let (c, h) = leaf.with_cancel();
            h.detach();
            leaf = c; // the chain is held only by its leaf
        }
        drop(root);
        assert_eq!(leaf.value::<Top>(), Some(&Top(1)));
        assert_eq!(leaf.value::<u8>(), None);
        cancel.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        drop(leaf); // iterative drop of 10M nodes
    });
}

#[test]
#[cfg_attr(miri, ignore = "10M / 1M nodes: native only")]
fn ten_million_deep_chain_dropped_live() {
    on_small_stack(SMALL_STACK, || {
        let mut leaf = Context::background().with_value(Top(2));
        for _ in 0..10_000_000 {
            let (c, h) = leaf.with_cancel();
            h.detach();
            leaf = c;
        }
        drop(leaf);
    });
}

#[test]
#[cfg_attr(miri, ignore = "10M / 1M nodes: native only")]
fn one_million_wide_fan_out() {
    on_small_stack(SMALL_STACK, || {
        let (root, cancel) = Context::background().with_cancel();
        let children: Vec<_> = (0..1_000_000).map(|_| root.with_cancel()).collect();
        cancel.cancel();
        assert!(
            children
                .iter()
                .all(|(c, _)| c.err() == Some(Error::Canceled))
        );
        drop(children);
        // and dropped while live
        let (root, _cancel) = Context::background().with_cancel();
        let children: Vec<_> = (0..1_000_000).map(|_| root.with_cancel()).collect();
        drop(root);
        drop(children);
    });
}

/// Merged contexts free iteratively too: a chain of 1,000,000 merges, each
/// holding the previous one as its *second* parent (the references a merged
/// node holds besides its first parent's), dropped from its end.
#[test]
#[cfg_attr(miri, ignore = "1M nodes: native only")]
fn one_million_merges_chained_through_their_other_parents() {
    on_small_stack(SMALL_STACK, || {
        let (root, cancel) = Context::background().with_value(Top(3)).with_cancel();
        let mut leaf = root.clone();
        for _ in 0..1_000_000 {
            let (m, h) = Context::background().merge(&leaf);
            h.detach();
            leaf = m;
        }
        drop(root);
        assert_eq!(leaf.value::<Top>(), Some(&Top(3)));
        cancel.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        drop(leaf);
    });
}

/// A chain born under an ended scope (each child copies its parent's
/// ending): deriving and reading a cause stay O(1) per node, whatever the
/// depth, and each reports the location of the cancel that ended the root.
#[test]
#[cfg_attr(miri, ignore = "1M nodes: native only")]
fn one_million_deep_chain_born_cancelled() {
    on_small_stack(SMALL_STACK, || {
        for tracked in [false, true] {
            let (root, cancel) = Context::background().with_cancel();
            let line = line!() + 2;
            if tracked {
                cancel.cancel();
            } else {
                drop(cancel); // records no location
            }
            let start = std::time::Instant::now();
            let mut leaf = root.clone();
            for _ in 0..1_000_000 {
                let (c, h) = leaf.with_cancel();
                h.detach();
                leaf = c;
                assert_eq!(
                    leaf.cancel_location().map(|l| l.line()),
                    tracked.then_some(line)
                );
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "linear in the depth"
            );
            drop(leaf);
        }
    });
}
