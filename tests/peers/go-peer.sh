# shellcheck shell=bash
# Sourced by the install scripts of the peers built with Go (SPIRE, OpenBao, Helm): the
# part they share.
#
# Cache layout: $STEEPLE_PEERS_CACHE/NAME-VERSION/KEY/bin, where KEY is a hash of what
# builds the peer: the calling install script, this file, any extra key material the script
# passes, and `go version`. A change to any of them is a new KEY, so the next run builds the
# peer cold (CI proves the changed install path instead of reusing an old binary). The
# stable path NAME-VERSION/bin is a symlink to the current KEY's bin, so tools that only know
# the version (the e2e harness's fallback, the bench README) still find it; keys other than
# the current one are removed after a successful build.
#
# go_peer_begin NAME VERSION GO_NEED EXTRA_KEY BINARY...
#   Sets DEST (the keyed dir) and BIN=$DEST/bin. If every BINARY is already in BIN, says so
#   in one line on stderr, prints BIN/<first BINARY> on stdout and exits the script with 0.
#   Otherwise takes the version dir's build lock (a second caller waits, then finds the
#   binaries) and makes WORK, a throwaway dir removed on exit, holding MOD (an empty
#   directory for the throwaway Go module) and, beside it, Go's module and build caches:
#   several GB that nothing reads again once the binary is cached, and disk on a CI machine
#   is finite. The caches must not sit inside MOD: `go mod tidy` would walk into them and
#   take every downloaded module for a package of the throwaway module. (-modcacherw:
#   module files are read-only by default, which `rm -rf` cannot remove.)
#
# go_peer_run WHAT COMMAND...
#   Runs COMMAND with its output in WORK/build.log (Go prints a line per module); on failure
#   prints WHAT and the log's last lines on stderr and exits the script with 1.
#
# go_peer_finish BINARY...
#   Moves each BINARY from WORK/bin into BIN (last, so an interrupted build never leaves
#   binaries the cache check would accept), points NAME-VERSION/bin at it, removes stale
#   keys, and prints one line on stderr (what, where, how long) and BIN/<first> on stdout.
go_peer_begin() {
    local name="$1" version="$2" go_need="$3" extra_key="$4"
    shift 4
    command -v go >/dev/null || { echo "install-$name: 'go' not found (need $go_need)" >&2; exit 1; }
    _GO_PEER_NAME="$name"
    _GO_PEER_VERSION="$version"
    _GO_PEER_STARTED=$SECONDS
    _GO_PEER_ROOT="${STEEPLE_PEERS_CACHE:-$HOME/.cache/steeple-peers}/$name-$version"
    local key
    key="$(
        {
            cat "$0" "${BASH_SOURCE[0]}"
            printf '%s\n' "$extra_key"
            go version
        } | sha256sum | cut -c1-12
    )"
    DEST="$_GO_PEER_ROOT/$key"
    BIN="$DEST/bin"
    _go_peer_exit_if_cached "$@"
    mkdir -p "$_GO_PEER_ROOT"
    exec 9>"$_GO_PEER_ROOT/.build.lock"
    if command -v flock >/dev/null; then
        flock 9
    fi
    _go_peer_exit_if_cached "$@"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/steeple-${name}build.XXXXXX")"
    MOD="$WORK/module"
    mkdir -p "$MOD"
    # shellcheck disable=SC2064 # expand WORK now
    trap "rm -rf '$WORK'" EXIT
    export GOMODCACHE="$WORK/gomodcache" GOCACHE="$WORK/gocache" GOFLAGS="${GOFLAGS:-} -modcacherw"
    echo "$name $version: building with $(go env GOVERSION) (cache key $key; a few minutes)" >&2
}

go_peer_run() {
    local what="$1"
    shift
    if ! "$@" >>"$WORK/build.log" 2>&1; then
        echo "install-$_GO_PEER_NAME: $what failed; the last lines of its output:" >&2
        tail -n 40 "$WORK/build.log" >&2
        exit 1
    fi
}

go_peer_finish() {
    local binary link="$_GO_PEER_ROOT/bin" stale
    mkdir -p "$BIN"
    for binary in "$@"; do
        mv -f "$WORK/bin/$binary" "$BIN/$binary"
    done
    _go_peer_link
    for stale in "$_GO_PEER_ROOT"/*/; do
        stale="${stale%/}"
        [[ "$stale" == "$DEST" || -L "$stale" ]] || rm -rf "$stale"
    done
    [[ -L "$link" ]] || echo "install-$_GO_PEER_NAME: could not link $link" >&2
    echo "$_GO_PEER_NAME $_GO_PEER_VERSION: built $* in $((SECONDS - _GO_PEER_STARTED)) s into $BIN" >&2
    echo "$BIN/$1"
}

# NAME-VERSION/bin -> KEY/bin, replaced in one rename. A real directory there is the layout
# from before keys existed; it goes.
_go_peer_link() {
    local link="$_GO_PEER_ROOT/bin" tmp
    [[ "$(readlink "$link" 2>/dev/null)" == "$(basename "$DEST")/bin" ]] && return 0
    if [[ -d "$link" && ! -L "$link" ]]; then
        rm -rf "$link"
    fi
    tmp="$_GO_PEER_ROOT/.bin.$$"
    ln -sfn "$(basename "$DEST")/bin" "$tmp"
    mv -fT "$tmp" "$link"
}

_go_peer_exit_if_cached() {
    local binary
    for binary in "$@"; do
        [[ -x "$BIN/$binary" ]] || return 0
    done
    _go_peer_link
    echo "$_GO_PEER_NAME $_GO_PEER_VERSION: cached in $BIN" >&2
    echo "$BIN/$1"
    exit 0
}
