#!/usr/bin/env bash
# Fuzzes every target for a bounded time: STEEPLE_FUZZ_SECONDS each (default 20), starting
# from the committed seeds (plus deploy/*.toml for the config target) copied into a
# throwaway corpus. Exits non-zero if any target crashes; the reproducer is kept under
# tests/fuzz/artifacts/<target>/. Needs the nightly toolchain; installs cargo-fuzz into
# ~/.cargo/bin if it is missing.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${STEEPLE_FUZZ_SECONDS:-20}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

# The root workspace's versions, so the fuzzed code is the code that ships; cargo adds
# libFuzzer's crates on top. (A lock of its own would go stale with every new agent
# dependency.)
cp ../../Cargo.lock Cargo.lock
cargo fmt --check
# The seeds still reach past the input checks (a plain build, no sanitizer).
cargo test --quiet

cargo +nightly fuzz build
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$corpus/$target"
  cp seeds/"$target"/* "$corpus/$target/"
  if [[ "$target" == config ]]; then
    for file in ../../deploy/*.toml; do
      cp "$file" "$corpus/$target/deploy-$(basename "$file")"
    done
  fi
  echo "fuzz: $target for ${seconds}s"
  # libFuzzer prints a line per new input: keep that out of the log unless it crashed.
  log="$corpus/$target.log"
  if cargo +nightly fuzz run "$target" "$corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    grep -E '^Done|^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true
  else
    # The panic or sanitizer report, then libFuzzer's summary and the reproducer's path.
    grep -A3 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | head -n 30 || true
    grep -A3 -E '^SUMMARY|Test unit written|^Failing input' "$log" || tail -n 20 "$log"
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]}; reproducers under tests/fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: no crashes"
