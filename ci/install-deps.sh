#!/usr/bin/env bash
# Installs the system packages the build and the test lanes need, when they are missing.
# As root: apt-get. Otherwise: a message naming the packages, and exit 1.
set -euo pipefail

# Usage: install-deps.sh [test]. `test` adds Go and hashicorp's go-plugin (Debian's), for the lane that loads
# the plugins with go-plugin's own client library; Python's `cryptography`, for the independent tpm_devid
# implementation the cross-check tests run; and QEMU, a kernel image and busybox-static, for the VM lane
# (testbed::vm: /dev/tpmrm0 in a VM; the kernel is only installed, never booted by the host); and prometheus,
# whose promtool checks each daemon's metrics and whose server fires the shipped alert rules; rpm (rpmbuild,
# rpm -qlp) and lintian for the packages lane.
# gcc and libc6-dev: cgo, for the real SPIRE that ci/spire.sh builds (its SQLite datastore).
PKGS=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config nginx openssl gcc libc6-dev)
if [[ "${1:-}" == test ]]; then
  PKGS+=(golang-1.19-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev
         golang-golang-x-net-dev golang-github-hashicorp-yamux-dev golang-github-hashicorp-go-hclog-dev golang-github-oklog-run-dev golang-github-golang-jwt-jwt-dev
         python3 python3-cryptography
         qemu-system-x86 linux-image-amd64 busybox-static systemd curl
         prometheus
         rpm lintian)
fi

# cargo-nextest runs the test binaries in parallel; installed from crates.io once per machine. Without it the
# lanes run with `cargo test` instead, and say so loudly.
if [[ "${1:-}" == test ]] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest from crates.io (once per machine)" >&2
  start=$SECONDS
  if cargo install --locked --quiet cargo-nextest; then
    echo "cargo-nextest installed in $((SECONDS - start)) s" >&2
  else
    echo "!! WARNING: cargo-nextest could not be installed; make test runs the lanes with cargo test instead" >&2
  fi
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The kernel package would build an initramfs for the host, which nothing here boots.
export INITRD=No
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The nginx package starts a system nginx on port 80; the tests run their own instances and need nothing of it.
# The prometheus package starts a system Prometheus too; the tests start their own.
for unit in nginx prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl stop "$unit" || true
  fi
done
