#!/usr/bin/env bash
# Supply-chain checks over the workspace's Cargo.lock (issue 5, item 9):
#   cargo deny  - advisories, licenses, bans, sources, with tests/supply-chain/deny.toml
#   cargo audit - the same RustSec advisories, through the other tool
# Exits non-zero when any check fails.
#
# The advisory database. Both tools read the RustSec advisory-db, a git repository that
# they clone from GitHub. CI reaches only package registries (crates.io, PyPI, npm, Maven
# Central, the Go module proxy, Debian), and none of them publishes that database, so:
#   1. we try cargo-deny's own fetch (`cargo deny fetch db`), which works wherever GitHub
#      is reachable;
#   2. failing that, a database an earlier fetch left in $CARGO_HOME/advisory-dbs is used
#      offline, if its newest advisory commit is at most MAX_DB_AGE_DAYS old;
#   3. failing that, the advisory checks (cargo deny's `advisories` and cargo audit) are
#      skipped with one line saying why; licenses, bans and sources still run and still fail
#      the script.
# Either way the script says which database it used and how old its content is.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=tests/supply-chain/deny.toml
MAX_DB_AGE_DAYS=90 # keep equal to maximum-db-staleness in deny.toml
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
DB_ROOT="$CARGO_HOME_DIR/advisory-dbs" # cargo-deny's default db-path

# --- tools -----------------------------------------------------------------------------
# Cold `cargo install --locked` on a 2-core machine shared with other builds took
# 293 s (cargo-deny 0.20.2) and 736 s (cargo-audit 0.22.2); cargo-audit only reads the
# advisory database, so it is installed only when one is available (below).
install_tool() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "supply-chain: installing $1 (cargo install --locked)"
    nice -n 10 cargo install --locked "$1"
  fi
}
install_tool cargo-deny
echo "supply-chain: $(cargo-deny --version)"

# cargo-deny runs offline below (so it never tries GitHub again); make sure every crate in
# Cargo.lock and the crates.io index entries it reads for yank checks are local.
cargo fetch --locked --quiet

# --- advisory database -----------------------------------------------------------------
db_dir=""
fetch_log=$(mktemp)
trap 'rm -f "$fetch_log"' EXIT
if timeout 180 cargo deny --manifest-path Cargo.toml --config "$CONFIG" fetch db >"$fetch_log" 2>&1; then
  db_how="fetched just now"
else
  db_how="" # fetch failed; its last line is shown
  echo "supply-chain: advisory-db fetch failed: $(grep -v '^[[:space:]]*$' "$fetch_log" | tail -n 1)"
fi
# The one database cargo-deny keeps for the default URL (advisory-db-<hash>).
for d in "$DB_ROOT"/advisory-db-*/; do
  if [[ -d "$d/crates" ]] && git -C "$d" rev-parse --verify -q HEAD >/dev/null; then
    db_dir="${d%/}"
    break
  fi
done

skip_reason=""
if [[ -z "$db_dir" ]]; then
  skip_reason="no RustSec advisory-db could be fetched and none is cached in $DB_ROOT"
else
  db_commit_ts=$(git -C "$db_dir" log -1 --format=%ct HEAD)
  db_date=$(git -C "$db_dir" log -1 --format=%cs HEAD)
  db_age_days=$((($(date +%s) - db_commit_ts) / 86400))
  if [[ -z "$db_how" ]]; then
    db_how="cached from an earlier fetch; refreshing failed"
    if ((db_age_days > MAX_DB_AGE_DAYS)); then
      skip_reason="the cached advisory-db in $db_dir is from $db_date ($db_age_days days old, over $MAX_DB_AGE_DAYS) and cannot be refreshed"
    fi
  fi
fi

if [[ -n "$skip_reason" ]]; then
  echo "supply-chain: ADVISORIES SKIPPED (cargo deny advisories, cargo audit): $skip_reason; GitHub is unreachable from here and no package registry carries the database."
  checks=(licenses bans sources)
else
  echo "supply-chain: advisory-db $db_dir, newest advisory commit $db_date ($db_age_days days old), $db_how"
  checks=(advisories licenses bans sources)
fi

# --- cargo deny ------------------------------------------------------------------------
status=0
echo "supply-chain: cargo deny check ${checks[*]}"
cargo deny --manifest-path Cargo.toml --config "$CONFIG" --offline --locked \
  check --hide-inclusion-graph "${checks[@]}" || status=1

# --- cargo audit -----------------------------------------------------------------------
if [[ -z "$skip_reason" ]]; then
  install_tool cargo-audit
  # --deny warnings: unmaintained, unsound and yanked fail here too, as in deny.toml.
  echo "supply-chain: cargo audit (offline, --db $db_dir)"
  cargo audit --file Cargo.lock --db "$db_dir" --no-fetch --stale --deny warnings || status=1
fi

if ((status != 0)); then
  echo "supply-chain: FAILED"
else
  echo "supply-chain: ok"
fi
exit "$status"
