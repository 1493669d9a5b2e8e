#!/usr/bin/env bash
# make package: Debian packages (dpkg-deb) and RPMs (rpmbuild), three of each:
#   spire-server-attestor-tpm-common  the devid tool, the system user, runtime directories, /etc/spire/server-attestor-tpm
#   spire-server-attestor-tpm-server  signer-unix, signer-http, the sign plugin, the server NodeAttestor and
#                                     KeyManager, the DevID enrollment CA (+ units)
#   spire-server-attestor-tpm-agent   the verifier, the agent NodeAttestor and KeyManager (+ units), the DevID
#                                     renewal timer
# server and agent both depend on common, so one host can run both. Written to target/package/.
# Usage: ci/package.sh [release|debug]   (make test packages the debug build it already has; make package: release)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-release}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OUT=target/package
BIN=target/$PROFILE
ETC=etc/spire/server-attestor-tpm
ARCH_DEB=amd64
ARCH_RPM=x86_64
MAINTAINER=${MAINTAINER:-"spire-server-attestor-tpm maintainers <spire-server-attestor-tpm@spiffe.io>"}

# Release packages are compressed hard; the test's packages of the debug build quickly.
if [[ $PROFILE == release ]]; then
  cargo build --release --locked --workspace --bins
  DEB_Z=(-Zxz)
  RPM_Z=w9.xzdio
else
  DEB_Z=(-Zgzip -z1)
  RPM_Z=w1.gzdio
fi
rm -rf "$OUT"
mkdir -p "$OUT"

common_bins=(spire-server-attestor-tpm-devid)
server_bins=(spire-server-attestor-tpm-signer-unix spire-server-attestor-tpm-signer-http spire-server-attestor-tpm-sign
             spire-server-nodeattestor-tpm-devid spire-server-attestor-tpm-devid-ca spire-server-keymanager-tpm)
agent_bins=(spire-server-attestor-tpm-verifier spire-agent-nodeattestor-tpm-devid spire-agent-keymanager-tpm)
server_units=(spire-server-attestor-tpm-signer-unix.service spire-server-attestor-tpm-signer-http.service
              spire-server-attestor-tpm-devid-ca.service)
agent_units=(spire-server-attestor-tpm-verifier.socket spire-server-attestor-tpm-verifier.service
             spire-server-attestor-tpm-devid-renew.service spire-server-attestor-tpm-devid-renew.timer)
server_confs=(signer-unix.conf signer-http.conf devid-ca.conf)
agent_confs=(verifier.conf devid-renew.env)

# The Debian packages providing the libraries `ldd` names, plus the TCTI that libtss2 loads at run time.
deb_depends() {
  local libs pkgs
  libs=$(for b in "$@"; do ldd "$BIN/$b" | awk '/=> \//{print $3}'; done | sort -u)
  pkgs=$(for l in $libs /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0; do
    [[ $l == *tcti-device* ]] && ! grep -q libtss2 <<<"$libs" && continue
    # dpkg knows a library by the path it shipped it under: /lib or /usr/lib, the link or its target.
    for p in "$l" "$(readlink -f "$l")" "${l#/usr}" "$(readlink -f "$l" | sed 's|^/usr||')"; do
      dpkg -S "$p" 2>/dev/null | cut -d: -f1 && break
    done
  done | sort -u)
  sort -u <<<"$pkgs" | paste -sd, | sed 's/,/, /g'
}

# stage NAME: the package's file tree under $OUT/NAME/root.
stage() {
  local name=$1 root=$OUT/$1/root
  shift
  mkdir -p "$root/usr/bin" "$root/usr/share/doc/$name"
  cat > "$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: spire-server-attestor-tpm

Files: *
Copyright: 2026 The spire-server-attestor-tpm authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
  printf '%s (%s) unstable; urgency=medium\n\n  * Package built from this repository.\n\n -- %s  %s\n' \
    "$name" "$VERSION" "$MAINTAINER" "$(date -R -d @0)" | gzip -9n > "$root/usr/share/doc/$name/changelog.gz"
  # serde_yaml_ng parses YAML with unsafe-libyaml, a Rust translation of libyaml: lintian sees libyaml's strings
  # (every package has a binary that reads YAML: the daemons' configs, the devid tool's PCR policy).
  mkdir -p "$root/usr/share/lintian/overrides"
  echo "$name: embedded-library libyaml [usr/bin/*]" > "$root/usr/share/lintian/overrides/$name"
}

install_bins() {
  local root=$1
  shift
  for b in "$@"; do
    install -m 0755 "$BIN/$b" "$root/usr/bin/$b"
    strip --strip-unneeded "$root/usr/bin/$b"
  done
}

install_units_and_confs() {
  local root=$1 units=$2 confs=$3
  mkdir -p "$root/lib/systemd/system" "$root/$ETC"
  for u in ${!units}; do install -m 0644 "systemd/$u" "$root/lib/systemd/system/$u"; done
  for c in ${!confs}; do install -m 0644 "services/conf/$c" "$root/$ETC/$c"; done
}

# --- common
stage spire-server-attestor-tpm-common
root=$OUT/spire-server-attestor-tpm-common/root
install_bins "$root" "${common_bins[@]}"
mkdir -p "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/$ETC/keys" "$root/usr/share/spire-server-attestor-tpm"
install -m 0644 systemd/sysusers.conf "$root/usr/lib/sysusers.d/spire-server-attestor-tpm.conf"
install -m 0644 systemd/tmpfiles.conf "$root/usr/lib/tmpfiles.d/spire-server-attestor-tpm.conf"
install -m 0644 deploy/prometheus/alerts.yml "$root/usr/share/spire-server-attestor-tpm/prometheus-alerts.yml"

# --- server
stage spire-server-attestor-tpm-server
root=$OUT/spire-server-attestor-tpm-server/root
install_bins "$root" "${server_bins[@]}"
install_units_and_confs "$root" 'server_units[@]' 'server_confs[@]'

# --- agent
stage spire-server-attestor-tpm-agent
root=$OUT/spire-server-attestor-tpm-agent/root
install_bins "$root" "${agent_bins[@]}"
install_units_and_confs "$root" 'agent_units[@]' 'agent_confs[@]'

# Maintainer scripts, the same for .deb and .rpm: users and directories from the shipped sysusers/tmpfiles
# files; units reloaded, never started by the package (each daemon needs its keys and config first).
common_post='if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers spire-server-attestor-tpm.conf; else for u in spire-tpm-signer-http spire-tpm-verifier spire-tpm-devid-ca; do getent passwd $u >/dev/null || useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin $u; done; fi
if ! command -v systemd-sysusers >/dev/null 2>&1; then getent group tss >/dev/null || groupadd --system tss; usermod -a -G tss spire-tpm-devid-ca; fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then systemd-tmpfiles --create spire-server-attestor-tpm.conf || true; fi'
# Purge (Debian only) removes the state; the system users stay, as Debian policy asks: a later user must not
# inherit their uids, and with them files they still own.
common_purge='rm -rf /var/lib/spire/server-attestor-tpm /run/spire/server-attestor-tpm
rmdir /var/lib/spire /run/spire /etc/spire 2>/dev/null || true'
# RPM has no purge: an erase (dnf remove, an erase and reinstall) must keep every node's rollback floor and
# accepted keyset updates, so it removes only the runtime directory.
rpm_erase='rm -rf /run/spire/server-attestor-tpm
rmdir /run/spire 2>/dev/null || true'
reload='if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi'
stop_units() { printf 'if [ -d /run/systemd/system ]; then systemctl stop %s || true; fi\n' "$*"; }

deb() {
  local name=$1 depends=$2 desc=$3 post=$4 prerm=$5 postrm=$6 root=$OUT/$1/root
  mkdir -p "$root/DEBIAN"
  {
    echo "Package: $name"
    echo "Version: $VERSION"
    echo "Architecture: $ARCH_DEB"
    echo "Maintainer: $MAINTAINER"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Depends: $depends"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
    echo "Homepage: https://github.com/spiffe/spire-server-attestor-tpm"
    echo "Description: $desc"
    echo " Trust in SPIRE rooted in TPMs: TPM-signed trust bundles for the"
    echo " agent's bootstrap, and tpm_devid node attestation."
  } > "$root/DEBIAN/control"
  (cd "$root" && find etc -type f 2>/dev/null | grep -v '/keys/' | sed 's|^|/|') > "$root/DEBIAN/conffiles" || true
  [[ -s $root/DEBIAN/conffiles ]] || rm -f "$root/DEBIAN/conffiles"
  for script in postinst prerm postrm; do
    local body
    case $script in postinst) body=$post ;; prerm) body=$prerm ;; postrm) body=$postrm ;; esac
    [[ -n $body ]] || continue
    printf '#!/bin/sh\nset -e\n%s\n' "$body" > "$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
  done
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group "${DEB_Z[@]}" --build "$root" "$OUT/${name}_${VERSION}_${ARCH_DEB}.deb" >/dev/null
}

rpm_pkg() {
  local name=$1 summary=$2 post=$3 preun=$4 postun=$5 root=$OUT/$1/root top=$OUT/rpmbuild
  mkdir -p "$top/SPECS" "$top/RPMS"
  local files
  files=$(cd "$root" && find . -path ./DEBIAN -prune -o \( -type f -o -type l \) -print | sed 's|^\.||' | sort | while read -r f; do
    case $f in /etc/*) echo "%config(noreplace) $f" ;; *) echo "$f" ;; esac
  done)
  [[ -d $root/$ETC/keys ]] && files+=$'\n'"%dir /$ETC/keys"
  cat > "$top/SPECS/$name.spec" <<EOF
Name: $name
Version: $VERSION
Release: 1
Summary: $summary
License: Apache-2.0
BuildArch: $ARCH_RPM
AutoReqProv: no
$( [[ $name != *-common ]] && echo "Requires: spire-server-attestor-tpm-common = $VERSION" )

%description
Trust in SPIRE rooted in TPMs: signed trust bundles for agent bootstrap, and tpm_devid.

%install
mkdir -p %{buildroot}
cp -a $PWD/$root/. %{buildroot}/
rm -rf %{buildroot}/DEBIAN

%post
$post

%preun
$preun

%postun
if [ "\$1" = 0 ]; then
$postun
fi

%files
$files
EOF
  rpmbuild -bb --quiet --define "_topdir $PWD/$top" --define "_build_id_links none" \
    --define "__strip /bin/true" --define "_binary_payload $RPM_Z" "$top/SPECS/$name.spec" >/dev/null
  find "$top/RPMS" -name "$name-$VERSION-*.rpm" -exec mv {} "$OUT/" \;
}

common_deps=$(deb_depends "${common_bins[@]}")
deb spire-server-attestor-tpm-common "adduser, $common_deps" "SPIRE TPM attestor: devid tool, user and directories" \
  "$common_post" "" "if [ \"\$1\" = purge ]; then
$common_purge
fi"
deb spire-server-attestor-tpm-server "spire-server-attestor-tpm-common (= $VERSION), $(deb_depends "${server_bins[@]}")" \
  "SPIRE TPM attestor: server signers and plugins" \
  "$reload" "$(stop_units "${server_units[@]}")" "$reload"
deb spire-server-attestor-tpm-agent "spire-server-attestor-tpm-common (= $VERSION), $(deb_depends "${agent_bins[@]}")" \
  "SPIRE TPM attestor: node verifier and agent plugin" \
  "$reload" "$(stop_units "${agent_units[@]}")" "$reload"

if command -v rpmbuild >/dev/null 2>&1; then
  rpm_pkg spire-server-attestor-tpm-common "spire-server-attestor-tpm: the devid tool, user and directories" "$common_post" "" "$rpm_erase"
  rpm_pkg spire-server-attestor-tpm-server "spire-server-attestor-tpm: signer-unix, signer-http, the sign and tpm_devid server plugins" \
    "$reload" "$(stop_units "${server_units[@]}")" "$reload"
  rpm_pkg spire-server-attestor-tpm-agent "spire-server-attestor-tpm: the verifier and the tpm_devid agent plugin" \
    "$reload" "$(stop_units "${agent_units[@]}")" "$reload"
else
  echo "rpmbuild is not installed (Debian package rpm): no RPMs can be built" >&2
  exit 1
fi
rm -rf "$OUT/rpmbuild"
ls -1 "$OUT"/*.deb "$OUT"/*.rpm 2>/dev/null

# How exposed each unit is, as systemd rates it (lower is better).
if command -v systemd-analyze >/dev/null 2>&1; then
  for u in systemd/*.service; do
    echo "== systemd-analyze security --offline=yes $(basename "$u")"
    systemd-analyze security --offline=yes "$u" 2>/dev/null | tail -1 || true
  done
fi
