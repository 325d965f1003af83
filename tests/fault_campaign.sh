#!/usr/bin/env bash
# The long version of every fault-injection scenario, one after another (about
# an hour on a 2-core machine): the same tests CI runs with a few trials each,
# with the trial counts of docs/reliability.md. Prints each scenario's summary
# lines; stops at the first failure. Full-disk cases need root.
#   bash tests/fault_campaign.sh            # default seeds
#   SEED=7 bash tests/fault_campaign.sh     # other kill moments
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${SEED:-1}"
run() {
  echo "== $*" >&2
  env "$@" -- --nocapture 2>&1 | grep -E '^(agent-kill|seed-kill|clock-jump|agent-disk|partition|v[0-9]+ |crash|disk)|test result|panicked'
}
cargo build --workspace --tests -q
run SHOAL_AGENT_KILL_TRIALS=200 SHOAL_AGENT_KILL_SEED="$seed" cargo test -q -p shoal-cli --test agent_kill
run SHOAL_SEED_KILL_TRIALS=40 SHOAL_SEED_KILL_SEED="$seed" cargo test -q -p shoal-cli --test seed_kill
run SHOAL_CRASH_TRIALS=200 cargo test -q -p shoal-cli --test crash
run cargo test -q -p shoal-netsim --test partition
run cargo test -q -p shoal-cli --test clock_jump
run cargo test -q -p shoal-cli --test agent_disk --test disk
run cargo test -q -p shoal-seed --test malicious_peer
run cargo test -q -p shoal-rollout --test freshness
run cargo test -q --test bad_input
