#!/usr/bin/env bash
# Builds spire-server and spire-agent (the version pinned below, the only place it is named) from the Go module
# proxy into a cache outside the work tree, once per machine; later runs reuse it. Prints the directory that holds
# the two binaries on stdout; everything else goes to stderr.
#
#   SAT_SPIRE_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/spire-server-attestor-tpm)
#
# SPIRE's go.mod has no replace/exclude directives, but the proxy lists no versions for it, so `go install
# pkg@version` is refused; a throw-away module that requires it as a tool (`go get -tool`) is what works.
# cgo stays on: SPIRE's SQLite datastore exists only in cgo builds.
set -euo pipefail

SPIRE_VERSION=v1.13.3
GO_MIN=1.25.3

cache=${SAT_SPIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spire-server-attestor-tpm}
dest=$cache/spire-$SPIRE_VERSION
bin=$dest/bin

if [[ -x $bin/spire-server && -x $bin/spire-agent ]] &&
   "$bin/spire-server" --version 2>&1 | grep -q "^${SPIRE_VERSION#v}"; then
  echo "$bin"
  exit 0
fi

# The first Go that is new enough: the one on PATH, then the usual install locations (Debian's own golang may
# be older and come first on PATH).
go=
for candidate in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go-1.2[5-9]/bin/go /usr/lib/go-1.[3-9]*/bin/go; do
  [[ -x $candidate ]] || continue
  have=$("$candidate" env GOVERSION 2>/dev/null | sed 's/^go//')
  if [[ -n $have && $(printf '%s\n%s\n' "$GO_MIN" "$have" | sort -V | head -n1) == "$GO_MIN" ]]; then
    go=$candidate
    break
  fi
done
if [[ -z $go ]]; then
  echo "spire.sh: no Go >= $GO_MIN found (PATH, /usr/local/go, /usr/lib/go-1.*): SPIRE $SPIRE_VERSION needs it;" \
       "install Go $GO_MIN or newer (e.g. Debian's golang-1.25 or later from backports, or the Go distribution)" \
       "and make the Go module proxy reachable" >&2
  exit 1
fi
if ! command -v gcc >/dev/null 2>&1; then
  echo "spire.sh: no C compiler (gcc): SPIRE's SQLite datastore needs cgo; install gcc" >&2
  exit 1
fi

echo "spire.sh: building SPIRE $SPIRE_VERSION into $dest (first run on this machine only)" >&2
start=$(date +%s)
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  export GOFLAGS=-mod=mod GOTOOLCHAIN=local
  "$go" mod init example.invalid/spire-tools >/dev/null 2>&1
  "$go" get -tool "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" \
                  "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION" >&2
  CGO_ENABLED=1 GOBIN=$work/bin "$go" install -trimpath \
    -ldflags "-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=${SPIRE_VERSION#v}" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent >&2
)
"$work/bin/spire-server" --version >&2
rm -rf "$dest.old"
[[ -e $dest ]] && mv "$dest" "$dest.old"
mkdir -p "$dest"
mv "$work/bin" "$bin"
rm -rf "$dest.old"
echo "spire.sh: SPIRE $SPIRE_VERSION built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
