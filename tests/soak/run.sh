#!/usr/bin/env bash
# The soak suite (tests/e2e/soak.rs) run long, for operators to quote its figures: traffic
# through two Envoys doing mTLS with SVIDs from Steeple while SPIRE rotates them, zero
# failed requests, flat Steeple RSS. Prints one `soak:` line (requests, failures,
# rotations, RSS first/last/max KiB). Not part of tests/run.sh, which runs the same suite
# for 60 s.
#
# Usage: tests/soak/run.sh [seconds]   (default 1800: half an hour)
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=tests/peers/env.sh
source tests/peers/env.sh

export STEEPLE_SOAK_SECONDS="${1:-1800}"
cargo test --locked -p steeple-e2e --test e2e -- soak:: --test-threads=1 --nocapture
