# shellcheck shell=bash
# Sourced by tests/run.sh: installs the real peers (each cached by its version and by the
# scripts that build it) and exports where they are for the e2e harness
# (tests/src/peers.rs reads these variables).
_steeple_peers_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

_steeple_spire_server="$(bash "$_steeple_peers_dir/install-spire.sh")" || return 1
bash "$_steeple_peers_dir/install-envoy.sh" || return 1
_steeple_openbao_bin="$(bash "$_steeple_peers_dir/install-openbao.sh")" || return 1
_steeple_helm_bin="$(bash "$_steeple_peers_dir/install-helm.sh")" || return 1
bash "$_steeple_peers_dir/install-strace.sh" || return 1
_steeple_go_imds_probe="$(bash "$_steeple_peers_dir/install-go-imds-probe.sh")" || return 1

_steeple_cache="${STEEPLE_PEERS_CACHE:-$HOME/.cache/steeple-peers}"
STEEPLE_SPIRE_BIN_DIR="$(dirname "$_steeple_spire_server")"
export STEEPLE_SPIRE_BIN_DIR
export STEEPLE_ENVOY_BIN="$_steeple_cache/venv/bin/envoy"
export STEEPLE_MOTO_SERVER_BIN="$_steeple_cache/venv/bin/moto_server"
export STEEPLE_OPENBAO_BIN="$_steeple_openbao_bin"
export STEEPLE_HELM_BIN="$_steeple_helm_bin"
export STEEPLE_GO_IMDS_PROBE_BIN="$_steeple_go_imds_probe"
unset _steeple_peers_dir _steeple_cache _steeple_spire_server _steeple_openbao_bin _steeple_helm_bin \
    _steeple_go_imds_probe
