#!/usr/bin/env bash
# Every check CI makes, from a fresh checkout: formatting, lints, the release build, and all
# tests (unit tests and the integration binary, which drives the real `opal` binary and plugins).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo build --workspace --release
if cargo nextest --version >/dev/null 2>&1; then
    # One process per test: allocation counts and /proc/self/maps checks see only their test.
    cargo nextest run --workspace --release --no-fail-fast
else
    # One thread: allocation counts are process-wide.
    cargo test --workspace --release --no-fail-fast -- --test-threads=1
fi
