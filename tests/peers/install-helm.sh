#!/usr/bin/env bash
# Builds the Helm CLI (HELM_VERSION, default 3.22.0) into
# $STEEPLE_PEERS_CACHE/helm-<version>/bin/helm, once per version, and prints its path on
# stdout. Needs Go (any release >= the go line of Helm's go.mod). Pure Go (CGO_ENABLED=0,
# as Helm's own release builds). Used by tests/e2e/deploy_manifests.rs to lint and render
# the chart in deploy/helm/steeple; it never talks to a cluster.
#
# Why `go install` and not a release tarball: the Go module proxy is the only source of
# binaries reachable here besides crates.io, PyPI, npm and Debian; Helm's main module
# (helm.sh/helm/v3) has no replace directives, so `go install pkg@version` builds it as is,
# checked against sum.golang.org. If the proxy stops serving 3.22.0, try HELM_VERSION=3.21.4.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.22.0}"
CACHE="${STEEPLE_PEERS_CACHE:-$HOME/.cache/steeple-peers}"
DEST="$CACHE/helm-$HELM_VERSION"
BIN="$DEST/bin"

have_binary() {
    [[ -x "$BIN/helm" ]]
}

if have_binary; then
    echo "helm $HELM_VERSION: cached in $BIN" >&2
    echo "$BIN/helm"
    exit 0
fi

command -v go >/dev/null || { echo "install-helm: 'go' not found" >&2; exit 1; }
mkdir -p "$DEST"

# One build per cache dir at a time; a second caller waits, then finds the binary.
exec 9>"$DEST/.build.lock"
if command -v flock >/dev/null; then
    flock 9
fi
if have_binary; then
    echo "helm $HELM_VERSION: cached in $BIN" >&2
    echo "$BIN/helm"
    exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/steeple-helmbuild.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# Go's module and build caches live in the throwaway dir too: several GB that nothing
# reads again once the binary is cached, and disk on a CI machine is finite.
# (-modcacherw: module files are read-only by default, which rm -rf cannot remove.)
export GOMODCACHE="$WORK/gomodcache" GOCACHE="$WORK/gocache" GOFLAGS="${GOFLAGS:-} -modcacherw"

echo "helm $HELM_VERSION: building into $BIN (a few minutes the first time)" >&2
# Install into a staging dir and move into place last, so an interrupted build never leaves
# a binary that the cache check above would accept. The version stamp is what Helm's own
# Makefile sets; without it `helm version` reports the module's pseudo default.
CGO_ENABLED=0 GOBIN="$WORK/bin" go install -trimpath \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
mkdir -p "$BIN"
mv -f "$WORK/bin/helm" "$BIN/helm"
"$BIN/helm" version >&2 || true
echo "helm $HELM_VERSION: installed in $BIN" >&2
echo "$BIN/helm"
