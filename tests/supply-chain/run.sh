#!/usr/bin/env bash
# Supply-chain checks over the workspace's Cargo.lock:
#   cargo deny  - advisories, licenses, bans, sources, with tests/supply-chain/deny.toml
#   cargo audit - the same RustSec advisories, through the other tool
# Exits non-zero when any check fails, and when no advisory database is usable at all.
#
# The advisory database. Both tools read the RustSec advisory-db, a git repository that
# they clone from GitHub. Our machines reach only package registries, none of which
# publishes it, so the database comes from, in this order:
#   1. a live fetch (`cargo deny fetch db`), wherever GitHub is reachable; it must be at
#      most LIVE_MAX_AGE_DAYS old (deny.toml's maximum-db-staleness);
#   2. failing that, the dated snapshot in ../shared/rustsec/advisory-db.bundle (override
#      with STEEPLE_RUSTSEC_BUNDLE), cloned into a throwaway dir; it must be at most
#      SNAPSHOT_MAX_AGE_DAYS old, a limit of its own: a snapshot is refreshed by hand, so
#      it is older than a fetch by nature, and the live limit stays as strict as it was;
#   3. failing that, a database an earlier live fetch left in $CARGO_HOME/advisory-dbs, under
#      the live limit.
# The script prints which one it used and the date of its newest advisory commit. With none
# of them, it fails: advisories are part of the check, not an optional extra.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONFIG=tests/supply-chain/deny.toml
LIVE_MAX_AGE_DAYS=90      # = maximum-db-staleness in deny.toml
SNAPSHOT_MAX_AGE_DAYS=180 # = the snapshot-max-db-staleness comment in deny.toml
BUNDLE="${STEEPLE_RUSTSEC_BUNDLE:-$PWD/../shared/rustsec/advisory-db.bundle}"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
DB_ROOT="$CARGO_HOME_DIR/advisory-dbs" # cargo-deny's default db-path
# The directory name cargo-deny gives the database of its default URL.
DB_NAME=advisory-db-3157b0e258782691

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# --- tools -----------------------------------------------------------------------------
# Cold `cargo install --locked` on a 2-core machine took ~5 min for cargo-deny and ~12 min
# for cargo-audit.
install_tool() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "supply-chain: installing $1 (cargo install --locked)"
    nice -n 10 cargo install --locked --quiet "$1"
  fi
}
install_tool cargo-deny
install_tool cargo-audit
echo "supply-chain: $(cargo-deny --version), $(cargo-audit --version)"

# cargo-deny runs offline below (so it never tries GitHub again); make sure every crate in
# Cargo.lock and the crates.io index entries it reads for yank checks are local.
cargo fetch --locked --quiet

# --- advisory database -----------------------------------------------------------------
# Prints the age in days of the database at $1 (its HEAD commit's date).
db_age_days() {
  echo $((($(date +%s) - $(git -C "$1" log -1 --format=%ct HEAD)) / 86400))
}
usable_db() {
  [[ -d "$1/crates" ]] && git -C "$1" rev-parse --verify -q HEAD >/dev/null
}

db_dir="" db_how="" deny_config="$CONFIG"
if timeout 180 cargo deny --manifest-path Cargo.toml --config "$CONFIG" fetch db \
  >"$scratch/fetch.log" 2>&1 && usable_db "$DB_ROOT/$DB_NAME"; then
  db_dir="$DB_ROOT/$DB_NAME" db_how="live fetch" max_age=$LIVE_MAX_AGE_DAYS
else
  echo "supply-chain: live advisory-db fetch failed: $(grep -v '^[[:space:]]*$' "$scratch/fetch.log" | tail -n 1)"
  if [[ -f "$BUNDLE" ]]; then
    git clone --quiet --branch snapshot "$BUNDLE" "$scratch/dbs/$DB_NAME"
    db_dir="$scratch/dbs/$DB_NAME" db_how="snapshot $BUNDLE" max_age=$SNAPSHOT_MAX_AGE_DAYS
    # The same policy with the snapshot's own staleness limit and database path.
    deny_config="$scratch/deny.toml"
    sed -e "s/^maximum-db-staleness = \"P${LIVE_MAX_AGE_DAYS}D\"\$/maximum-db-staleness = \"P${SNAPSHOT_MAX_AGE_DAYS}D\"\\ndb-path = \"${scratch//\//\\/}\\/dbs\"/" \
      "$CONFIG" >"$deny_config"
    grep -q "^db-path = " "$deny_config" || {
      echo "supply-chain: $CONFIG has no 'maximum-db-staleness = \"P${LIVE_MAX_AGE_DAYS}D\"' line to derive the snapshot's config from" >&2
      exit 1
    }
  elif usable_db "$DB_ROOT/$DB_NAME"; then
    db_dir="$DB_ROOT/$DB_NAME" db_how="left by an earlier live fetch" max_age=$LIVE_MAX_AGE_DAYS
  fi
fi
if [[ -z "$db_dir" ]]; then
  echo "supply-chain: FAILED: no RustSec advisory database: the live fetch failed, there is no snapshot at $BUNDLE and none cached in $DB_ROOT" >&2
  exit 1
fi
db_date=$(git -C "$db_dir" log -1 --format=%cs HEAD)
age=$(db_age_days "$db_dir")
echo "supply-chain: advisory-db from the $db_how, newest advisory commit $db_date ($age days old, limit $max_age)"
if ((age > max_age)); then
  echo "supply-chain: FAILED: that advisory database is $age days old, over the limit of $max_age days; refresh it" >&2
  exit 1
fi

# --- cargo deny ------------------------------------------------------------------------
status=0
echo "supply-chain: cargo deny check advisories licenses bans sources"
cargo deny --manifest-path Cargo.toml --config "$deny_config" --offline --locked \
  check --hide-inclusion-graph advisories licenses bans sources || status=1

# --- cargo audit -----------------------------------------------------------------------
# --deny warnings: unmaintained, unsound and yanked fail here too, as in deny.toml. The
# ignores are deny.toml's (one list, with the reasons there).
audit_ignores=()
while read -r id; do
  audit_ignores+=(--ignore "$id")
done < <(sed -n 's/^[[:space:]]*{ *id *= *"\(RUSTSEC-[0-9-]*\)".*/\1/p' "$CONFIG")
echo "supply-chain: cargo audit (offline, --db $db_dir)"
cargo audit --file Cargo.lock --db "$db_dir" --no-fetch --stale --deny warnings \
  "${audit_ignores[@]}" || status=1

if ((status != 0)); then
  echo "supply-chain: FAILED"
else
  echo "supply-chain: ok"
fi
exit "$status"
