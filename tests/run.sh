#!/usr/bin/env bash
# Steeple's one test command (README, CI): installs the real peers (SPIRE, Envoy, moto,
# OpenBao, Helm, an aws-sdk-go-v2 probe; cached by version under ~/.cache/steeple-peers),
# checks formatting, lints and the supply chain (cargo deny), then runs every unit test
# and every end-to-end suite against those peers, runs the SDS regression guard, and
# fuzzes each cargo-fuzz target
# briefly (nightly toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# shellcheck source=tests/peers/env.sh
source tests/peers/env.sh

# tests/run.sh builds the tree once through; incremental state would only take disk (GBs).
export CARGO_INCREMENTAL=0

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The agent's other feature combinations (none, aws only, vault only) build lint-clean too.
for features in "" aws vault; do
  cargo clippy -p steeple --no-default-features --features "$features" --all-targets --locked -- -D warnings
done
bash tests/supply-chain/run.sh
cargo build --locked -p steeple --bin steeple
cargo test --workspace --locked --exclude steeple-e2e
# The suites each start SPIRE and Envoys; on 2 cores they run one at a time.
cargo test --locked -p steeple-e2e -- --test-threads=1
# The SDS regression guard (tests/bench/README.md): 1,000 streams, one rotation, ratios
# against tests/bench/sds_guard_baseline.json. Builds the release agent and bench once.
cargo bench --locked -p steeple-e2e --bench sds_fanout -- --guard check
# Every fuzz target for a bounded time (STEEPLE_FUZZ_SECONDS, default 20 s each).
bash tests/fuzz/run.sh
