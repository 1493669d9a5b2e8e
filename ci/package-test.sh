#!/usr/bin/env bash
# The packages lane of make test: builds the packages from the debug binaries the other lanes use, checks them
# with lintian (no error) and rpm -qlp (the expected files), installs the .debs with dpkg -i, runs every
# binary's --version from /usr/bin, verifies the installed units with systemd-analyze, then removes and purges
# the packages and checks that nothing of theirs is left but the system users (Debian policy). A tool it needs that
# is missing, or a machine where it cannot install (not root, the packages already installed), fails the lane.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(spire-server-attestor-tpm-server spire-server-attestor-tpm-agent spire-server-attestor-tpm-common)
BINS=(spire-server-attestor-tpm-signer-unix spire-server-attestor-tpm-signer-http spire-server-attestor-tpm-sign
      spire-server-nodeattestor-tpm-devid spire-server-attestor-tpm-verifier spire-agent-nodeattestor-tpm-devid
      spire-server-attestor-tpm-devid spire-server-attestor-tpm-devid-ca spire-server-keymanager-tpm
      spire-agent-keymanager-tpm)
UNITS=(spire-server-attestor-tpm-signer-unix.service spire-server-attestor-tpm-signer-http.service
       spire-server-attestor-tpm-verifier.service spire-server-attestor-tpm-verifier.socket
       spire-server-attestor-tpm-devid-ca.service spire-server-attestor-tpm-devid-renew.service
       spire-server-attestor-tpm-devid-renew.timer)
USERS=(spire-tpm-signer-http spire-tpm-verifier spire-tpm-devid-ca)
fail() { echo "packages: $*" >&2; exit 1; }

ci/package.sh debug
OUT=target/package
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

if command -v lintian >/dev/null 2>&1; then
  lintian --fail-on error "$OUT"/*.deb 2>&1 | grep -v -e no-manual-page -e 'running with root' || true
  lintian --fail-on error "$OUT"/*.deb >/dev/null 2>&1 || fail "lintian reports errors (above)"
  echo "lintian: no error"
else
  fail "lintian is not installed (apt-get install lintian): the packages cannot be linted"
fi

if command -v rpm >/dev/null 2>&1; then
  expect() { # rpm, then the files it must list
    local rpm=$OUT/$1-$VERSION-1.x86_64.rpm listed
    shift
    listed=$(rpm -qlp "$rpm")
    for f in "$@"; do grep -qx "$f" <<<"$listed" || fail "$rpm does not list $f; it lists: $listed"; done
  }
  expect spire-server-attestor-tpm-common /usr/bin/spire-server-attestor-tpm-devid \
    /usr/lib/sysusers.d/spire-server-attestor-tpm.conf /usr/lib/tmpfiles.d/spire-server-attestor-tpm.conf \
    /etc/spire/server-attestor-tpm/keys
  expect spire-server-attestor-tpm-server /usr/bin/spire-server-attestor-tpm-signer-unix \
    /usr/bin/spire-server-attestor-tpm-signer-http /usr/bin/spire-server-attestor-tpm-sign \
    /usr/bin/spire-server-nodeattestor-tpm-devid /lib/systemd/system/spire-server-attestor-tpm-signer-unix.service \
    /lib/systemd/system/spire-server-attestor-tpm-signer-http.service /etc/spire/server-attestor-tpm/signer-unix.conf \
    /etc/spire/server-attestor-tpm/signer-http.conf /usr/bin/spire-server-attestor-tpm-devid-ca \
    /lib/systemd/system/spire-server-attestor-tpm-devid-ca.service /etc/spire/server-attestor-tpm/devid-ca.conf \
    /usr/bin/spire-server-keymanager-tpm
  expect spire-server-attestor-tpm-agent /usr/bin/spire-server-attestor-tpm-verifier \
    /usr/bin/spire-agent-nodeattestor-tpm-devid /lib/systemd/system/spire-server-attestor-tpm-verifier.service \
    /lib/systemd/system/spire-server-attestor-tpm-verifier.socket /etc/spire/server-attestor-tpm/verifier.conf \
    /lib/systemd/system/spire-server-attestor-tpm-devid-renew.service \
    /lib/systemd/system/spire-server-attestor-tpm-devid-renew.timer /etc/spire/server-attestor-tpm/devid-renew.env \
    /usr/bin/spire-agent-keymanager-tpm
  rpm -qp --configfiles "$OUT/spire-server-attestor-tpm-agent-$VERSION-1.x86_64.rpm" | grep -qx /etc/spire/server-attestor-tpm/verifier.conf \
    || fail "verifier.conf is not a config file of the agent RPM"
  echo "rpm -qlp: every expected file listed, configs marked"
  # An erase is not a purge: the verifier's state (rollback floor, accepted keyset updates) survives it.
  scripts=$(rpm -qp --scripts "$OUT/spire-server-attestor-tpm-common-$VERSION-1.x86_64.rpm")
  grep -q /var/lib/spire <<<"$scripts" && fail "the common RPM's scripts remove the state in /var/lib/spire: $scripts"
  grep -q userdel <<<"$scripts" && fail "the common RPM's scripts delete system users: $scripts"
  echo "rpm -qp --scripts: an erase keeps /var/lib/spire and the system users"
else
  fail "rpm is not installed (apt-get install rpm): the RPMs cannot be checked"
fi

# The .deb conffiles: every shipped config, so that an upgrade keeps the operator's edits.
conffiles() { dpkg-deb --ctrl-tarfile "$OUT/$1_${VERSION}_amd64.deb" | tar -xO ./conffiles 2>/dev/null | sort | paste -sd' '; }
[[ $(conffiles spire-server-attestor-tpm-server) == "/etc/spire/server-attestor-tpm/devid-ca.conf /etc/spire/server-attestor-tpm/signer-http.conf /etc/spire/server-attestor-tpm/signer-unix.conf" ]] \
  || fail "server .deb conffiles: $(conffiles spire-server-attestor-tpm-server)"
[[ $(conffiles spire-server-attestor-tpm-agent) == "/etc/spire/server-attestor-tpm/devid-renew.env /etc/spire/server-attestor-tpm/verifier.conf" ]] \
  || fail "agent .deb conffiles: $(conffiles spire-server-attestor-tpm-agent)"
echo "dpkg-deb: every shipped config is a conffile"

# Installing needs root, and must not touch a machine that runs these packages for real.
[[ $(id -u) -eq 0 ]] || fail "not root: the packages were built and checked, but installing them needs root"
for p in "${PKGS[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
    fail "$p is installed on this machine: the install test would remove it, so it did not run"
  fi
done
before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
find /etc /usr /lib /var/lib /run -xdev 2>/dev/null | sort > "$before"

dpkg -i "$OUT"/spire-server-attestor-tpm-{common,server,agent}_"$VERSION"_amd64.deb >/dev/null
for b in "${BINS[@]}"; do
  out=$("/usr/bin/$b" --version) || fail "/usr/bin/$b --version failed"
  grep -q "$VERSION" <<<"$out" || fail "/usr/bin/$b --version says $out"
done
echo "dpkg -i: every binary answers --version from /usr/bin"
for u in "${USERS[@]}"; do getent passwd "$u" >/dev/null || fail "no system user $u"; done
[[ -d /etc/spire/server-attestor-tpm/keys ]] || fail "no /etc/spire/server-attestor-tpm/keys"
[[ $(stat -c '%a %U' /var/lib/spire/server-attestor-tpm/verifier 2>&1) == "700 spire-tpm-verifier" ]] \
  || fail "the verifier's state directory is not 0700 spire-tpm-verifier: $(stat -c '%a %U' /var/lib/spire/server-attestor-tpm/verifier 2>&1)"
id -nG spire-tpm-devid-ca | grep -qw tss || fail "spire-tpm-devid-ca is not in group tss: $(id -nG spire-tpm-devid-ca)"
[[ $(stat -c '%a %U' /var/lib/spire/server-attestor-tpm/devid-crl 2>&1) == "755 spire-tpm-devid-ca" ]] \
  || fail "the CRL directory is not 0755 spire-tpm-devid-ca: $(stat -c '%a %U' /var/lib/spire/server-attestor-tpm/devid-crl 2>&1)"
units=()
for u in "${UNITS[@]}"; do units+=("/lib/systemd/system/$u"); done
if command -v systemd-analyze >/dev/null 2>&1; then
  # --man=no: the units' documentation pages are not shipped; everything else (binaries, users, syntax) is checked.
  verify=$(systemd-analyze verify --man=no "${units[@]}" 2>&1) || fail "systemd-analyze verify: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify: $verify"
  echo "systemd-analyze verify: the installed units are clean"
else
  fail "systemd-analyze is not installed (apt-get install systemd): the units cannot be verified"
fi

dpkg --purge "${PKGS[@]}" >/dev/null
find /etc /usr /lib /var/lib /run -xdev 2>/dev/null | sort > "$after"
left=$(comm -13 "$before" "$after" | grep -e spire -e attestor || true)
[[ -z $left ]] || fail "left behind after purge: $left"
for u in "${USERS[@]}"; do
  getent passwd "$u" >/dev/null || fail "purge deleted the system user $u (Debian policy keeps them)"
done
echo "dpkg --purge: nothing of the packages is left but the system users"
