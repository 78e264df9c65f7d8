#!/usr/bin/env bash
# A/B: child create+drop of the working tree against BASE (a commit, default
# HEAD), both in one process (scripts/ab). Usage: scripts/ab.sh [BASE]
#   SIBS=0 ROUNDS=60 scripts/ab.sh HEAD~2
set -euo pipefail
top=$(git rev-parse --show-toplevel)
base=${1:-HEAD}
dir="$top/target/ab/base"
rm -rf "$dir"
mkdir -p "$dir"
git -C "$top" archive "$base" | tar -x -C "$dir"
# A second package of the same crate needs its own name.
sed -i '0,/^name = "cancel-tree"$/s//name = "cancel-tree-base"/' "$dir/Cargo.toml"
cd "$top/scripts/ab"
cargo run --release -q
