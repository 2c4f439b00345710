#!/usr/bin/env bash
# Builds tests/e2e/sdk/go_imds_probe (an unmodified aws-sdk-go-v2 client, the versions
# pinned by its go.mod and go.sum) into
# $STEEPLE_PEERS_CACHE/go-imds-probe-<sdk version>/<key>/bin/go_imds_probe, once per
# source and build recipe (see go-peer.sh: the key covers this script, go-peer.sh, the
# probe's main.go, go.mod and go.sum, and `go version`), and prints its path on stdout.
# Needs Go >= 1.24 (the SDK's go line). Pure Go (CGO_ENABLED=0). Used by
# tests/e2e/imds.rs: the SDK must find Steeple's IMDSv2 endpoint through
# AWS_EC2_METADATA_SERVICE_ENDPOINT and sign an STS call with what it serves.
#
# The modules come from the Go module proxy, checked against the committed go.sum
# (-mod=readonly: a go.sum that does not cover them fails the build rather than being
# rewritten). Cold: ~16 MB of modules and 27 s on 2 idle cores (90 s beside a cargo build);
# cached: 13 MB, found at once.
set -euo pipefail

PROBE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../e2e/sdk/go_imds_probe" && pwd)"
# The SDK's core module version names the cache directory; the key follows the sources.
SDK_VERSION="$(awk '$1 == "github.com/aws/aws-sdk-go-v2" { print $2 }' "$PROBE_SRC/go.mod")"
# shellcheck source=tests/peers/go-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-peer.sh"
go_peer_begin go-imds-probe "${SDK_VERSION#v}" "Go >= 1.24" \
    "$(cat "$PROBE_SRC/main.go" "$PROBE_SRC/go.mod" "$PROBE_SRC/go.sum")" go_imds_probe

cp "$PROBE_SRC/main.go" "$PROBE_SRC/go.mod" "$PROBE_SRC/go.sum" "$MOD/"
cd "$MOD"
go_peer_run "go build" env CGO_ENABLED=0 go build -mod=readonly -trimpath \
    -o "$WORK/bin/go_imds_probe" .
go_peer_finish go_imds_probe
