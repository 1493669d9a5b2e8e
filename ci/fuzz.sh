#!/usr/bin/env bash
# make fuzz: each coverage-guided target (fuzz/fuzz_targets/) for FUZZ_SECONDS (default 120) with AddressSanitizer
# and overflow checks (-a), on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags). New
# interesting inputs are kept in fuzz/corpus/<target>/, which `make test` replays; a crash stops the run with
# the input saved under fuzz/artifacts/<target>/: add it to the corpus and fix it with a unit test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io (once per machine)" >&2
  cargo install --locked --quiet cargo-fuzz
fi
seconds=${FUZZ_SECONDS:-120}
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^sat-fuzz$')
for t in $targets; do
  echo "== fuzz $t (${seconds}s)"
  start=$SECONDS
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -a "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
       >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "!! fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+ +DONE|^Done [0-9]+ runs' "$log" | tail -n 1 || true
  rm -f "$log"
  echo "== fuzz $t: $((SECONDS - start)) s"
done
