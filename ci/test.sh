#!/usr/bin/env bash
# The test lanes, exactly as CI runs them, each with its wall time. `ci/test.sh` (make test) runs every lane, the
# unit lane first: it needs nothing but Rust, so a newcomer reaches it before any package is installed or SPIRE
# is built. `ci/test.sh LANE...` runs some: unit, tpm, e2e, spire, vm, packages (the Makefile's test-LANE).
# A lane whose tools are missing fails, saying which; none is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh clone gains nothing from incremental state: it only costs disk (about 2 GB here).
[[ ${CI:-} == true ]] && export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

times=()
lane() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  "$@"
  times+=("$(printf '%-52s %5d s' "$name" $((SECONDS - start)))")
  echo "== $name: $((SECONDS - start)) s"
}
summary() {
  local rc=$?
  echo "== lane wall times"
  printf '   %s\n' "${times[@]}"
  echo "== disk: target/ $(du -sh target 2>/dev/null | cut -f1), free $(df -h --output=avail . | tail -1 | tr -d ' ')"
  [[ $rc -eq 0 ]] || echo "== a lane failed (exit $rc): the lane after the last time above" >&2
}
trap summary EXIT

# The unit lane's crates without the `esapi`/`tpm` features: no libtss2, no TPM, no system package.
UNIT=(-p crypto -p common -p services -p plugin -p tpm --no-default-features)

nextest() { # ARGS...: cargo nextest run. The unit lane, which runs before anything is installed, falls back to cargo
  # test on a machine without cargo-nextest; the lanes selected by a filter expression need it (ci/install-deps.sh
  # installs it from crates.io) and fail without it.
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast --final-status-level fail "$@"
  elif [[ " $* " != *" -E "* ]]; then
    echo "cargo-nextest is not installed (yet): running cargo test" >&2
    cargo test --locked --no-fail-fast "$@"
  else
    echo "cargo-nextest is not installed, and this lane selects its tests with a filter expression: run" >&2
    echo "ci/install-deps.sh test (it installs cargo-nextest from crates.io), then the lane again" >&2
    return 1
  fi
}

deps() { ci/install-deps.sh test; }

layering() {
  if cargo tree --workspace --locked -e normal,build -f '{p} {f}' --prefix none | grep -E '^tpm v[^ ]* .*\bmock\b'; then
    echo "the tpm crate's mock feature is reachable from a non-dev dependency" >&2
    return 1
  fi
  if cargo tree --workspace --locked -e normal,build -f '{p} {f}' --prefix none | grep -E '^[a-z]+ v[^ ]* .*\bfuzzing\b'; then
    echo "a crate's fuzzing feature (the fuzz target bodies) is reachable from a non-dev dependency" >&2
    return 1
  fi
  # Control: the same pattern sees the feature where testbed's tests turn it on.
  if ! cargo tree --workspace --locked -e normal,dev,build -f '{p} {f}' --prefix none | grep -qE '^[a-z]+ v[^ ]* .*\bfuzzing\b'; then
    echo "the fuzzing check sees no fuzzing feature even with dev-dependencies: the check itself is broken" >&2
    return 1
  fi
  if grep -rlE 'tss_esapi::|use tss_esapi' --include='*.rs' common services plugin crypto testbed; then
    echo "only the tpm crate may use tss-esapi" >&2
    return 1
  fi
  # `cargo tree -i X` fails with "package ID specification `X` did not match any packages" when nothing in the
  # graph depends on X: that is the answer we want. Any other failure fails the lane instead of passing it.
  depends_on() {
    local out
    # shellcheck disable=SC2086
    if out=$(cargo tree --locked $1 -i "$2" 2>&1); then
      grep -q "^$2 v" <<<"$out"
    elif grep -q 'did not match any packages' <<<"$out"; then
      return 1
    else
      echo "cargo tree $1 -i $2 failed: $out" >&2
      exit 1
    fi
  }
  # The unit lane, dev-dependencies included, needs no libtss2; nor do the verifier, signer-http, the sign plugin
  # and the tpm_devid server plugin. And the plugins never build the daemons.
  if depends_on "${UNIT[*]} -e normal,dev,build" tss-esapi; then
    echo "the unit lane builds tss-esapi (libtss2)" >&2
    return 1
  fi
  local pkg
  for pkg in "-p common" "-p services --no-default-features" "-p plugin --no-default-features"; do
    if depends_on "$pkg -e normal,build" tss-esapi; then
      echo "$pkg builds tss-esapi" >&2
      return 1
    fi
  done
  if depends_on "-p plugin -e normal,build" services; then
    echo "plugin depends on services (the daemons)" >&2
    return 1
  fi
  # The check can see: the default build of services (signer-unix) does build tss-esapi.
  depends_on "-p services -e normal,build" tss-esapi || { echo "the layering check no longer sees tss-esapi under services" >&2; return 1; }
  cargo clippy --locked -p services -p plugin --no-default-features --all-targets -- -D warnings
}

build() {
  cargo build --workspace --bins --locked
  # The Go host that loads the sign plugin with hashicorp's go-plugin client (Debian's packages, offline).
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/sat-gocache" GOFLAGS= \
    /usr/lib/go-1.19/bin/go build -o target/debug/goplugin-host ./testbed/goplugin-host
  # The Go original's way of verifying a token (golang-jwt, Debian's package), for the compatibility test.
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/sat-gocache" GOFLAGS= \
    /usr/lib/go-1.19/bin/go build -o target/debug/gojwt-verify ./testbed/gojwt-verify
}

spire() {
  SAT_SPIRE_BIN=$(ci/spire.sh)
  export SAT_SPIRE_BIN
  "$SAT_SPIRE_BIN/spire-server" --version
}

# The VM lane needs QEMU, a kernel image, busybox-static, and systemd and curl for its systemd boot
# (ci/install-deps.sh test installs them as root). Without them it fails, naming them.
vm() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
  [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
  [[ -x /lib/systemd/systemd ]] || missing+=(systemd)
  command -v curl >/dev/null || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "the VM lane (/dev/tpmrm0) cannot run: missing packages ${missing[*]}" >&2
    echo "install them with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    return 1
  fi
  nextest --workspace -E 'test(/^vm_/)'
}

# Each lane of the README's table, as a nextest filter over the workspace (the real SPIRE's tests are named
# real_spire_*, the VM's vm_*).
# The TPM lane also runs the library tests that need the `esapi` feature (plugin's tpm_devid agent, testbed's).
TPM='package(tpm) | binary(tpm_swtpm) | binary(tpm_devid) | (kind(lib) & rdeps(tpm))'
E2E='binary(docs) | binary(e2e_single) | binary(e2e_signer_unix) | binary(e2e_signer_http) | binary(e2e_verifier) | binary(e2e_plugin) | binary(e2e_ha) | binary(e2e_heal) | binary(cli)'
GOPLUGIN='binary(e2e_goplugin) | binary(e2e_go_verifier)'
DEVID='binary(e2e_devid) | binary(devid_negative) | binary(devid_recorded) | binary(devid_xcheck) | binary(e2e_devid_ca) | binary(e2e_keymanager)'
METRICS='binary(e2e_metrics)'
FUZZ='binary(fuzz_corpus)'
UNIT_PKGS='package(crypto) | package(common) | package(services) | package(plugin) | package(tpm)'
EVERY="$UNIT_PKGS | $TPM | $E2E | $GOPLUGIN | $DEVID | $METRICS | $FUZZ | test(/^real_spire_/) | test(/^vm_/)"

# Every test of the workspace is in a lane: a new test binary no lane names fails here instead of never running.
every_test_has_a_lane() {
  local orphans
  orphans=$(cargo nextest list --workspace --locked --message-format oneline -E "not ($EVERY)" 2>/dev/null)
  if [[ -n $orphans ]]; then
    echo "tests in no lane (name their binary in ci/test.sh):" >&2
    echo "$orphans" >&2
    return 1
  fi
}

run_lane() {
  case $1 in
    unit)
      lane "fmt" cargo fmt --all -- --check
      lane "unit (needs no system package)" nextest "${UNIT[@]}"
      ;;
    tpm)
      lane "system packages" deps
      lane "TPM on swtpm" nextest --workspace -E "$TPM"
      ;;
    e2e)
      lane "system packages" deps
      lane "build the binaries the end-to-end tests run" build
      lane "end to end (real binaries, swtpm, nginx)" nextest --workspace -E "$E2E"
      lane "go-plugin (hashicorp's client, golang-jwt)" nextest --workspace -E "$GOPLUGIN"
      lane "tpm_devid and KeyManager (SPIRE-like host, negative tables, xcheck, enrollment CA)" nextest --workspace -E "$DEVID"
      lane "metrics (promtool, a real Prometheus)" nextest --workspace -E "$METRICS"
      lane "fuzz corpora" nextest --workspace -E "$FUZZ"
      ;;
    spire)
      lane "system packages" deps
      lane "build the binaries the end-to-end tests run" build
      lane "SPIRE v1.13.3 (built once per machine)" spire
      lane "the real SPIRE end to end" nextest --workspace -E 'test(/^real_spire_/)'
      ;;
    vm)
      lane "system packages" deps
      lane "build the binaries the end-to-end tests run" build
      lane "the production device path: /dev/tpmrm0 in a VM" vm
      ;;
    packages)
      lane "system packages" deps
      lane "packages: lintian, rpm -qlp, dpkg -i, systemd-analyze verify, purge" ci/package-test.sh
      ;;
    *)
      echo "unknown lane $1: use unit, tpm, e2e, spire, vm or packages" >&2
      exit 2
      ;;
  esac
}

if [[ $# -gt 0 ]]; then
  for l in "$@"; do run_lane "$l"; done
  exit 0
fi
# Everything, unit first; the checks that need the system packages after they are installed.
run_lane unit
lane "system packages" deps
lane "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
lane "layering: no mock TPM shipped, tss-esapi only where a TPM is opened" layering
lane "build the binaries the end-to-end tests run" build
lane "doc tests" cargo test --workspace --doc --locked
lane "every test is in a lane" every_test_has_a_lane
lane "TPM on swtpm" nextest --workspace -E "$TPM"
lane "end to end (real binaries, swtpm, nginx)" nextest --workspace -E "$E2E"
lane "go-plugin (hashicorp's client, golang-jwt)" nextest --workspace -E "$GOPLUGIN"
lane "tpm_devid and KeyManager (SPIRE-like host, negative tables, xcheck, enrollment CA)" nextest --workspace -E "$DEVID"
lane "metrics (promtool, a real Prometheus)" nextest --workspace -E "$METRICS"
lane "fuzz corpora" nextest --workspace -E "$FUZZ"
lane "SPIRE v1.13.3 (built once per machine)" spire
lane "the real SPIRE end to end" nextest --workspace -E 'test(/^real_spire_/)'
lane "the production device path: /dev/tpmrm0 in a VM" vm
lane "packages: lintian, rpm -qlp, dpkg -i, systemd-analyze verify, purge" ci/package-test.sh
