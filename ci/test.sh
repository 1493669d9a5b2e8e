#!/usr/bin/env bash
# Every test lane, exactly as CI runs it: formatting, lints, the layering check, unit, TPM (swtpm) and
# end-to-end (real binaries, swtpm, nginx) tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== layering: no shipped binary links the software (mock) TPM"
if cargo tree --workspace --locked -e normal,build -f '{p} {f}' --prefix none | grep -E '^tpm v[^ ]* .*\bmock\b'; then
  echo "the tpm crate's mock feature is reachable from a non-dev dependency" >&2
  exit 1
fi
if grep -rl 'tss_esapi' --include='*.rs' services plugin crypto testbed; then
  echo "only the tpm crate may use tss-esapi" >&2
  exit 1
fi

echo "== build the binaries the end-to-end tests run"
cargo build --workspace --bins --locked
# The Go host that loads the sign plugin with hashicorp's go-plugin client (Debian's packages, offline).
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/sat-gocache" GOFLAGS= \
  /usr/lib/go-1.19/bin/go build -o target/debug/goplugin-host ./testbed/goplugin-host

echo "== doc tests"
cargo test --workspace --doc --locked

echo "== tests: unit, TPM on swtpm, end to end"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --final-status-level fail
else
  cargo test --workspace --locked --no-fail-fast
fi
