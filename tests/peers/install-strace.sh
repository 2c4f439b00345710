#!/usr/bin/env bash
# strace, from Debian's packages, for the e2e suite that proves Steeple writes nothing to
# disk but its sockets (tests/e2e/no_disk_writes.rs). Installs it when missing and this
# runs as root with apt-get; otherwise says how.
set -euo pipefail
if command -v strace >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q strace >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q strace >/dev/null; }
fi
command -v strace >/dev/null 2>&1 || {
  echo "strace is missing: install it (apt-get install strace)" >&2
  exit 1
}
