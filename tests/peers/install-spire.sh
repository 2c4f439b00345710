#!/usr/bin/env bash
# Builds spire-server and spire-agent (SPIRE_VERSION, default 1.15.3) into
# $STEEPLE_PEERS_CACHE/spire-<version>/<key>/bin, once per version and build recipe (see
# go-peer.sh), and prints spire-server's path on stdout. Needs Go >= 1.26.6 and a C compiler (SPIRE's sqlite3 datastore uses cgo). Takes
# ~10 minutes on 2 cores the first time.
#
# Why not `go install github.com/spiffe/spire/cmd/spire-server@v1.15.3`: the module proxy
# answers 403 on SPIRE's @v/list here, and one of its dependencies,
# github.com/Keyfactor/ejbca-go-client-sdk@v1.1.0, is 403 too. So we build from a throwaway
# module that requires SPIRE at the tag and pins that dependency to v1.0.2 (which the proxy
# serves). Only SPIRE's EJBCA UpstreamAuthority plugin imports it, and our tests never
# configure that plugin.
set -euo pipefail

SPIRE_VERSION="${SPIRE_VERSION:-1.15.3}"
# shellcheck source=tests/peers/go-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-peer.sh"
go_peer_begin spire "$SPIRE_VERSION" "Go >= 1.26.6" "" spire-server spire-agent

cat >"$MOD/go.mod" <<GOMOD
module steeple.local/spirebuild

go 1.26.6

require github.com/spiffe/spire v$SPIRE_VERSION

// v1.1.0 is 403 on the module proxy; only the (unused) EJBCA UpstreamAuthority plugin
// imports this module, and v1.0.2 builds.
replace github.com/Keyfactor/ejbca-go-client-sdk => github.com/Keyfactor/ejbca-go-client-sdk v1.0.2
GOMOD

cat >"$MOD/tools.go" <<'GOSRC'
//go:build tools

package tools

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
GOSRC

cd "$MOD"
go_peer_run "go mod tidy" go mod tidy
go_peer_run "go install" env GOBIN="$WORK/bin" go install \
    github.com/spiffe/spire/cmd/spire-server \
    github.com/spiffe/spire/cmd/spire-agent
go_peer_finish spire-server spire-agent
