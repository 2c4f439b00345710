#!/usr/bin/env bash
# Builds the Helm CLI (HELM_VERSION, default 3.22.0) into
# $STEEPLE_PEERS_CACHE/helm-<version>/<key>/bin/helm, once per version and build recipe
# (see go-peer.sh), and prints its path on stdout. Needs Go (any release >= the go line of Helm's go.mod). Pure Go (CGO_ENABLED=0,
# as Helm's own release builds). Used by tests/e2e/deploy_manifests.rs to lint and render
# the chart in deploy/helm/steeple; it never talks to a cluster.
#
# Why `go install` and not a release tarball: the Go module proxy is the only source of
# binaries reachable here besides crates.io, PyPI, npm and Debian; Helm's main module
# (helm.sh/helm/v3) has no replace directives, so `go install pkg@version` builds it as is,
# checked against sum.golang.org. If the proxy stops serving 3.22.0, try HELM_VERSION=3.21.4.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-3.22.0}"
# shellcheck source=tests/peers/go-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-peer.sh"
go_peer_begin helm "$HELM_VERSION" "Go" "" helm

# The version stamp is what Helm's own Makefile sets; without it `helm version` reports the
# module's pseudo default.
cd "$MOD"
go_peer_run "go install" env CGO_ENABLED=0 GOBIN="$WORK/bin" go install -trimpath \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
go_peer_finish helm
