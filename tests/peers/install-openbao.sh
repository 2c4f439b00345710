#!/usr/bin/env bash
# Builds the OpenBao server/CLI binary `bao` (OPENBAO_VERSION, default 2.4.0) into
# $STEEPLE_PEERS_CACHE/openbao-<version>/<key>/bin/bao, once per version and build recipe
# (see go-peer.sh), and prints its path on stdout. Needs Go (any release >= the go line of OpenBao's go.mod; 1.24.6 for 2.4.0). Pure
# Go (CGO_ENABLED=0, as OpenBao's own release builds), no UI (built without the `ui` tag).
# Takes ~5 minutes on 2 cores the first time (4.3 measured with empty Go caches).
#
# Why not `go install github.com/openbao/openbao@v2.4.0`: OpenBao's go.mod has replace
# directives (./api, ./sdk, ./api/auth/*), which `go install pkg@version` refuses, and its
# v2.x tags are not valid versions of the module path github.com/openbao/openbao (no /v2
# suffix). So we build from a throwaway module that requires OpenBao at the release tag's
# commit as a pseudo-version. As a dependency its replace directives are ignored, which is
# fine: api/v2 and sdk/v2 are published at the same version as their own module tags
# (api/v2.4.0, sdk/v2.4.0), and their Go code is identical to ./api and ./sdk at the tag.
#
# Why 2.4.0 and not a newer release: the module proxy here answers 403 ("This module version
# is not available") for every pseudo-version of a newer release commit we tried (v2.6.2 =
# v0.0.0-20260818154305-dd9c19c37a87, v2.6.1, v2.6.0, v2.5.0..v2.5.3, v2.4.4), for the bare
# commit hash, for @v/list and @latest. It serves the v2.4.0 commit's pseudo-version below.
# To try another release, set OPENBAO_VERSION, OPENBAO_COMMIT (full hash) and
# OPENBAO_MODULE_VERSION (v0.0.0-<UTC commit time YYYYmmddHHMMSS>-<first 12 hex>).
#
# Checksums: sum.golang.org answers 404 here for OpenBao's own KMS-wrapper modules
# (github.com/openbao/go-kms-wrapping/wrappers/{aead,pkcs11,static,transit}/v2), so
# `go mod tidy` cannot verify them. Instead of turning verification off, we seed our go.sum
# with OpenBao's own go.sum from the (verified) module zip: go checks every download against
# those hashes and only asks the checksum database about modules that file lacks.
set -euo pipefail

OPENBAO_VERSION="${OPENBAO_VERSION:-2.4.0}"
OPENBAO_COMMIT="${OPENBAO_COMMIT:-f9407a27fbee45f62ba521bba2bf1e2360c61031}"
OPENBAO_MODULE_VERSION="${OPENBAO_MODULE_VERSION:-v0.0.0-20250828202315-f9407a27fbee}"
# shellcheck source=tests/peers/go-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-peer.sh"
go_peer_begin openbao "$OPENBAO_VERSION" "Go >= 1.24.6" "$OPENBAO_COMMIT $OPENBAO_MODULE_VERSION" bao

cat >"$MOD/go.mod" <<GOMOD
module steeple.local/openbaobuild

go 1.24.6

require github.com/openbao/openbao $OPENBAO_MODULE_VERSION
GOMOD

cat >"$MOD/tools.go" <<'GOSRC'
//go:build tools

package tools

import _ "github.com/openbao/openbao"
GOSRC

cd "$MOD"
go mod download -json "github.com/openbao/openbao@$OPENBAO_MODULE_VERSION" >"$WORK/download.json" ||
    { cat "$WORK/download.json" >&2; exit 1; }
src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$WORK/download.json")"
[[ -f "$src/go.sum" ]] || { cat "$WORK/download.json" >&2; echo "install-openbao: no go.sum in '$src'" >&2; exit 1; }
cp "$src/go.sum" go.sum
chmod u+w go.sum
# -e: OpenBao's go.mod requires api/auth/{approle,userpass}/v2 v2.0.0, versions that exist
# only through its own replace directives (no such tags; the proxy answers 403). Only tests
# of OpenBao's packages import them, never the binary, so tidy may leave them out; anything
# the binary does need and cannot get still fails the build below.
go_peer_run "go mod tidy" go mod tidy -e
go_peer_run "go build" env CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/bao" \
    -ldflags "-X github.com/openbao/openbao/version.fullVersion=$OPENBAO_VERSION -X github.com/openbao/openbao/version.GitCommit=$OPENBAO_COMMIT" \
    github.com/openbao/openbao
go_peer_finish bao
