#!/usr/bin/env bash
# Every test lane, exactly as CI runs it: formatting, lints, the layering check, unit, TPM (swtpm) and
# end-to-end (real binaries, swtpm, nginx) tests, then the real SPIRE lane. Each lane prints its wall time.
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
  times+=("$(printf '%-44s %5d s' "$name" $((SECONDS - start)))")
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

layering() {
  if cargo tree --workspace --locked -e normal,build -f '{p} {f}' --prefix none | grep -E '^tpm v[^ ]* .*\bmock\b'; then
    echo "the tpm crate's mock feature is reachable from a non-dev dependency" >&2
    return 1
  fi
  if grep -rlE 'tss_esapi::|use tss_esapi' --include='*.rs' common services plugin crypto testbed; then
    echo "only the tpm crate may use tss-esapi" >&2
    return 1
  fi
  # Only what opens a TPM builds tss-esapi: without the `tpm` feature, the verifier, signer-http, the sign
  # plugin and the tpm_devid server plugin need no libtss2. And the plugins never build the daemons.
  # `cargo tree -i X` fails with "package ID specification `X` did not match any packages" when nothing in the
  # graph depends on X: that is the answer we want. Any other failure fails the lane instead of passing it.
  depends_on() {
    local out
    # shellcheck disable=SC2086
    if out=$(cargo tree --locked -p $1 -e normal,build -i "$2" 2>&1); then
      grep -q "^$2 v" <<<"$out"
    elif grep -q 'did not match any packages' <<<"$out"; then
      return 1
    else
      echo "cargo tree -p $1 -i $2 failed: $out" >&2
      exit 1
    fi
  }
  local pkg
  for pkg in common "services --no-default-features" "plugin --no-default-features"; do
    if depends_on "$pkg" tss-esapi; then
      echo "$pkg builds tss-esapi" >&2
      return 1
    fi
  done
  if depends_on plugin services; then
    echo "plugin depends on services (the daemons)" >&2
    return 1
  fi
  # The check can see: the default build of services (signer-unix) does build tss-esapi.
  depends_on services tss-esapi || { echo "the layering check no longer sees tss-esapi under services" >&2; return 1; }
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

# The real SPIRE's tests are named real_spire_*, the VM's vm_*; each group runs in a lane of its own.
MAIN="not test(/^real_spire_/) and not test(/^vm_/)"
tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --final-status-level fail -E "$1"
  else
    echo "!! cargo-nextest is not installed (ci/install-deps.sh could not install it): running cargo test" >&2
    case $1 in
      "$MAIN") cargo test --workspace --locked --no-fail-fast -- --skip real_spire_ --skip vm_ ;;
      *real_spire_*) cargo test --locked --no-fail-fast -p testbed --test e2e_spire ;;
      *vm_*) cargo test --locked --no-fail-fast -p testbed --test vm_device ;;
    esac
  fi
}

# The VM lane needs QEMU, a kernel image, busybox-static, and systemd and curl for its systemd boot
# (ci/install-deps.sh test installs them as root).
vm() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
  [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
  [[ -x /lib/systemd/systemd ]] || missing+=(systemd)
  command -v curl >/dev/null || missing+=(curl)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "!! WARNING: the VM lane (/dev/tpmrm0) is NOT RUN: missing packages ${missing[*]}" >&2
    echo "!! install them with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
    return 0
  fi
  tests "test(/^vm_/)"
}

spire() {
  SAT_SPIRE_BIN=$(ci/spire.sh)
  export SAT_SPIRE_BIN
  "$SAT_SPIRE_BIN/spire-server" --version
}

lane "fmt" cargo fmt --all -- --check
lane "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
lane "layering: no mock TPM shipped, tss-esapi only where a TPM is opened" layering
lane "build the binaries the end-to-end tests run" build
lane "SPIRE v1.13.3 (built once per machine)" spire
lane "doc tests" cargo test --workspace --doc --locked
lane "unit, TPM on swtpm, end to end" tests "$MAIN"
lane "the real SPIRE end to end" tests "test(/^real_spire_/)"
lane "the production device path: /dev/tpmrm0 in a VM" vm
lane "packages: lintian, rpm -qlp, dpkg -i, systemd-analyze verify, purge" ci/package-test.sh
