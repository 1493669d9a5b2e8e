# The front door. Newcomers need two commands: `make testbed` and `make test`.
SHELL := /bin/bash
export TSS2_LOG ?= all+NONE
export CARGO_TERM_COLOR ?= never

.PHONY: help deps testbed test test-unit test-tpm test-e2e test-spire test-vm test-packages bench fuzz package fmt lint build clean

help:
	@echo "make testbed  - swtpm TPMs, the real daemons, nginx and the real SPIRE: the scenarios step by step"
	@echo "make test     - every lane, unit first: fmt, unit, clippy, TPM on swtpm, end to end, the real SPIRE, VM, packages"
	@echo "make test-LANE - one lane: test-unit (needs nothing but Rust), test-tpm, test-e2e, test-spire, test-vm, test-packages"
	@echo "make bench    - measure the performance targets against raw TPM and openssl on this machine"
	@echo "make fuzz     - run each fuzz target for FUZZ_SECONDS (default 120) with AddressSanitizer"
	@echo "make package  - .deb and .rpm packages of the release build in target/package/"

deps:
	@ci/install-deps.sh

build: deps
	cargo build --workspace --bins --locked

testbed: deps
	cargo build --workspace --bins --locked
	SAT_SPIRE_BIN=$$(ci/spire.sh) cargo run -q -p testbed --bin testbed --locked

# The lanes install what they need themselves (ci/install-deps.sh), after the unit lane, which needs nothing.
test:
	ci/test.sh

test-unit test-tpm test-e2e test-spire test-vm test-packages:
	ci/test.sh $(@:test-%=%)

bench: deps
	ci/bench.sh

fuzz: deps
	ci/fuzz.sh

package: deps
	ci/package.sh release

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets --locked -- -D warnings

clean:
	cargo clean
