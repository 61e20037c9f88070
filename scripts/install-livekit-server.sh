#!/usr/bin/env bash
# Builds the pinned livekit-server release from source with the Go toolchain, from the Go module proxy
# (never a prebuilt binary), into .build/bin/livekit-server. Run by `make livekit-server`, hence by
# `make run` and `make test`; does nothing when that version is already there.
#
#   scripts/install-livekit-server.sh [--soft]
#
# --soft: where it cannot build (no Go, no proxy), say why and how to fix it, and exit 0; the LiveKit
# tests then fail with the same advice, and `make run` serves without LiveKit mode.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${LIVEKIT_SERVER_VERSION:-v1.11.0}
MODULE=github.com/livekit/livekit-server
OUT=.build/bin/livekit-server
soft=false
[ "${1:-}" = "--soft" ] && soft=true

give_up() {
  echo "!! livekit-server $VERSION was not built: $1" >&2
  echo "!! The LiveKit room tests need it. Install Go 1.25 or newer (Debian: apt-get install golang-go," >&2
  echo "!! if its version is recent enough, or the official tarball), make sure the Go module proxy" >&2
  echo "!! can be reached, then run: make livekit-server" >&2
  $soft && exit 0
  exit 1
}

if [ -x "$OUT" ] && [ "$("$OUT" --version 2>/dev/null)" = "livekit-server version ${VERSION#v}" ]; then
  exit 0
fi
command -v go >/dev/null || give_up "the Go toolchain (go) is not on PATH"

echo ">> building livekit-server $VERSION with $(go version | cut -d' ' -f3) (about 2-4 minutes the first time)"
mkdir -p .build/bin
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
# `go install module@version` refuses a release whose go.mod has replace directives; then the module
# is downloaded into the module cache and built in place.
if ! GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "$MODULE/cmd/server@$VERSION" 2>"$gobin/install.log"; then
  if grep -q "replace directives" "$gobin/install.log"; then
    dir=$(GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] || give_up "go mod download $MODULE@$VERSION failed"
    (cd "$dir" && GOFLAGS="-mod=mod -buildvcs=false" go build -o "$gobin/server" ./cmd/server) \
      || give_up "go build in $dir failed"
  else
    cat "$gobin/install.log" >&2
    give_up "go install $MODULE/cmd/server@$VERSION failed (output above)"
  fi
fi
mv "$gobin/server" "$OUT"
"$OUT" --version
