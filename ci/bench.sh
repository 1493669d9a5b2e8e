#!/usr/bin/env bash
# make bench: release builds, then the benchmark program (figures and ratios, no assertions on time).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --workspace --bins
cargo build --release --locked -p tpm --example sign_bench --example quote_bench
cargo build --release --locked -p crypto --example verify_bench
SAT_SPIRE_BIN=$(ci/spire.sh)
export SAT_SPIRE_BIN
exec target/release/bench
