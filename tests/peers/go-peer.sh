# shellcheck shell=bash
# Sourced by the install scripts of the peers built with Go (SPIRE, OpenBao, Helm): the
# part they share.
#
# go_peer_begin NAME VERSION GO_NEED BINARY...
#   Sets DEST=$STEEPLE_PEERS_CACHE/NAME-VERSION and BIN=$DEST/bin. If every BINARY is
#   already in BIN, says so on stderr, prints BIN/<first BINARY> on stdout and exits the
#   script with 0. Otherwise checks that `go` exists (GO_NEED goes in the error), takes
#   the cache dir's build lock (a second caller waits, then finds the binaries), and makes
#   WORK, a throwaway dir removed on exit that also holds Go's module and build caches:
#   several GB that nothing reads again once the binary is cached, and disk on a CI
#   machine is finite. (-modcacherw: module files are read-only by default, which
#   `rm -rf` cannot remove.)
go_peer_begin() {
    local name="$1" version="$2" go_need="$3"
    shift 3
    DEST="${STEEPLE_PEERS_CACHE:-$HOME/.cache/steeple-peers}/$name-$version"
    BIN="$DEST/bin"
    _go_peer_exit_if_cached "$name" "$version" "$@"
    command -v go >/dev/null || { echo "install-$name: 'go' not found (need $go_need)" >&2; exit 1; }
    mkdir -p "$DEST"
    exec 9>"$DEST/.build.lock"
    if command -v flock >/dev/null; then
        flock 9
    fi
    _go_peer_exit_if_cached "$name" "$version" "$@"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/steeple-${name}build.XXXXXX")"
    # shellcheck disable=SC2064 # expand WORK now
    trap "rm -rf '$WORK'" EXIT
    export GOMODCACHE="$WORK/gomodcache" GOCACHE="$WORK/gocache" GOFLAGS="${GOFLAGS:-} -modcacherw"
}

_go_peer_exit_if_cached() {
    local name="$1" version="$2" binary
    shift 2
    for binary in "$@"; do
        [[ -x "$BIN/$binary" ]] || return 0
    done
    echo "$name $version: cached in $BIN" >&2
    echo "$BIN/$1"
    exit 0
}
