#!/usr/bin/env bash
# Swarm benchmark: one seed and one agent on loopback against a plain QUIC copy and
# rsync, on the same tree in the same run; plus the agent's peak memory on a ~1 GB
# release. Hot page cache, rounds interleaved, medians reported.
#
#   scripts/bench-swarm.sh [--rounds N] [--json] [--keep] [--no-memory] [--quick]
#
#   --rounds N    rounds of the transfer comparison (default 3, or $ROUNDS)
#   --json        one JSON object on stdout instead of the Markdown report
#   --keep        keep the work directory (logs, trees, stores)
#   --no-memory   skip the ~1 GB peak-memory run
#   --quick       a smoke test: the demo tree (19 MB), one round, 2 x 16 MB extras
#
# Environment: SHOAL_BENCH_TMP  parent of the work directory (default /var/tmp)
#              BENCH_TIMEOUT    seconds any one step may take (default 600)
#              BENCH_IDLE_WAIT  before each round, wait up to this many seconds for
#                               the machine to be idle (< 15% busy for 3 s; default
#                               60, 0: do not wait); other load is reported either way
#
# Contenders, each into an empty destination, after `sync`:
#   shoal       `shoal seed TREE --tag v1` (packed beforehand, untimed) serving one
#               `shoal agent` (fresh root, auto_activate); time from starting the agent
#               to ROOT/current -> releases/v1, polled every 100 ms. Includes the
#               agent's start, tracker poll, QUIC handshake, every chunk request,
#               verification, the install (decompress, re-verify, write, fsync) and
#               the switch of `current`.
#   quic_copy   benches/quic_copy.rs: one file over one QUIC stream between two
#               shoal_net endpoints (same cluster TLS, same Tuning::default()):
#                 bundle: the seed store's chunk files concatenated (the bytes shoal sends)
#                 tar:    the raw tree as a tar file (for reference)
#   rsync       `rsync -a rsync://127.0.0.1:PORT/tree/ DEST/` against `rsync --daemon`
#   install     `shoal install --activate` from the seed's store into a fresh root:
#               shoal's work without the network, to split its time.
# Memory: a tree of the bench preset plus two 256 MB binaries (half /dev/urandom,
# half zeros, in 1 MiB runs), seeded as v1g; VmHWM of the agent process read from
# /proc/PID/status after `current` -> v1g, just before it is stopped.
# All processes are stopped and the work directory removed on exit (unless --keep).
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
JSON=0
KEEP=0
MEMORY=1
QUICK=0
STEP_TIMEOUT=${BENCH_TIMEOUT:-600}
IDLE_WAIT=${BENCH_IDLE_WAIT:-60}
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --json) JSON=1; shift ;;
        --keep) KEEP=1; shift ;;
        --no-memory) MEMORY=0; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-swarm.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $ROUNDS in ''|*[!0-9]*|0) echo "bench-swarm.sh: --rounds needs a positive integer" >&2; exit 2 ;; esac
case $STEP_TIMEOUT in ''|*[!0-9]*|0) echo "bench-swarm.sh: BENCH_TIMEOUT needs a positive integer" >&2; exit 2 ;; esac
case $IDLE_WAIT in ''|*[!0-9]*) echo "bench-swarm.sh: BENCH_IDLE_WAIT needs a number of seconds" >&2; exit 2 ;; esac
PRESET=bench
EXTRA_MB=256
if [ "$QUICK" -eq 1 ]; then PRESET=demo; EXTRA_MB=16; ROUNDS=1; fi

log() { echo "bench-swarm: $*" >&2; }
die() { echo "bench-swarm.sh: $*" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

# --- tools ---------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v rsync >/dev/null; then
    log "installing rsync"
    $SUDO apt-get install -y rsync >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y rsync >&2; }
fi
export PATH="$HOME/.cargo/bin:$PATH"
for t in rsync tar find xargs sort awk sed readlink ss timeout head; do
    command -v "$t" >/dev/null || die "$t is missing"
done
log "building shoal (release) and the quic_copy bench"
cargo build --release -p shoal-cli >&2
SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/release/shoal"
[ -x "$SHOAL" ] || die "$SHOAL not found"
QCOPY=$(cargo bench --bench quic_copy --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*quic_copy[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//')
[ -n "$QCOPY" ] && [ -x "$QCOPY" ] || die "could not build benches/quic_copy.rs (try: cargo bench --bench quic_copy --no-run)"

# --- work directory, processes, cleanup ------------------------------------------
PARENT=${SHOAL_BENCH_TMP:-/var/tmp}
mkdir -p "$PARENT"
# bench tree, its tar, seed store, bundle (~1.6 GB); per round an agent root, an rsync
# copy and a local install (~1.9 GB); the memory run: tree, store and agent root (~3 GB).
NEED_MB=$(( 1700 + 1900 * ROUNDS + 3200 * MEMORY ))
[ "$QUICK" -eq 1 ] && NEED_MB=500
AVAIL_MB=$(( $(df -Pk "$PARENT" | awk 'NR==2{print $4}') / 1024 ))
[ "$AVAIL_MB" -ge "$NEED_MB" ] || die "$PARENT has $AVAIL_MB MB free; this run needs about $NEED_MB MB"
W=$(mktemp -d "$PARENT/shoal-swarm.XXXXXX")
PIDS=()
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" -eq 1 ]; then
        log "kept $W"
    else
        chmod -R u+w "$W" 2>/dev/null || true
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Run copies, so that a rebuild in the checkout during the run changes nothing.
mkdir "$W/bin"
cp "$SHOAL" "$W/bin/shoal"
cp "$QCOPY" "$W/bin/quic_copy"
SHOAL=$W/bin/shoal
QCOPY=$W/bin/quic_copy

# free_port u|t: sets PORT to a free loopback port (UDP for QUIC, TCP for rsync).
free_port() {
    local proto=$1 i
    for ((i = 0; i < 100; i++)); do
        PORT=$((20000 + RANDOM % 40000))
        [ -z "$(ss -Hln"$proto" "sport = :$PORT" 2>/dev/null)" ] && return 0
    done
    die "no free $proto port"
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
field() { grep -o "\"$1\":[0-9.]*" | head -n 1 | sed 's/.*://'; }
sum_sizes() { find "$@" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}'; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
warm() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }

# --- cluster, trees, seed ------------------------------------------------------------
log "work dir $W"
"$SHOAL" cluster init --dir "$W/cluster" --json > /dev/null
"$SHOAL" cluster issue --dir "$W/cluster" --host seed --dc dc1 --out "$W/seed.id" --json > /dev/null

# start_seed NAME TREE TAG STORE: starts a seed (its tracker on a fresh port) that
# packs TREE as TAG; waits for the pack report. Sets SEED_PID, SEED_PORT.
start_seed() {
    local name=$1 tree=$2 tag=$3 store=$4 t0 i
    free_port u
    SEED_PORT=$PORT
    cat > "$W/$name.toml" <<EOF
host = "seed"
dc = "dc1"
store = "$store"
key = "$W/cluster/deploy.key"
trust = []
identity = "$W/seed.id"
listen = "127.0.0.1:$SEED_PORT"
EOF
    t0=$EPOCHREALTIME
    "$SHOAL" seed "$tree" --tag "$tag" --config "$W/$name.toml" --json > "$W/$name.out" 2> "$W/$name.log" &
    SEED_PID=$!
    PIDS+=("$SEED_PID")
    for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
        [ -s "$W/$name.out" ] && break
        kill -0 "$SEED_PID" 2>/dev/null || { cat "$W/$name.log" >&2; die "the seed exited"; }
        sleep 0.1
    done
    [ -s "$W/$name.out" ] || die "the seed did not pack $tree in $STEP_TIMEOUT s"
    log "$name packed $tag in $(secs "$t0" "$EPOCHREALTIME") s (port $SEED_PORT)"
}

# run_agent NAME TAG: starts agent NAME (fresh root) against the running seed and waits
# until its current is TAG. Sets AGENT_S (seconds), AGENT_XFER_S (seconds until the
# install began, i.e. every chunk was fetched and verified), AGENT_HWM (KiB), AGENT_WIRE
# (bytes the tracker says it downloaded), AGENT_STORE (bytes of its chunk store).
run_agent() {
    local name=$1 tag=$2 pid t0 t1 tx i link
    "$SHOAL" cluster issue --dir "$W/cluster" --host "$name" --dc dc1 --out "$W/$name.id" --json > /dev/null
    cat > "$W/$name.toml" <<EOF
host = "$name"
dc = "dc1"
root = "$W/$name.root"
identity = "$W/$name.id"
trust = ["$W/cluster/deploy.key.pub"]
tracker = "127.0.0.1:$SEED_PORT"
tracker_host = "seed"
listen = "127.0.0.1:0"
auto_activate = true
poll_ms = 200
EOF
    sync
    t0=$EPOCHREALTIME
    "$SHOAL" agent --config "$W/$name.toml" 2> "$W/$name.log" &
    pid=$!
    PIDS+=("$pid")
    link=""
    tx=""
    for ((i = 0; i < STEP_TIMEOUT * 10; i++)); do
        # The install starts (releases/.partial-*) once every chunk is held.
        if [ -z "$tx" ] && compgen -G "$W/$name.root/releases/.partial-*" > /dev/null; then
            tx=$EPOCHREALTIME
        fi
        link=$(readlink "$W/$name.root/current" 2>/dev/null || true)
        [ "${link##*/}" = "$tag" ] && break
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$W/$name.log" >&2; die "agent $name exited"; }
        sleep 0.1
    done
    t1=$EPOCHREALTIME
    [ "${link##*/}" = "$tag" ] || { tail -n 20 "$W/$name.log" >&2; die "agent $name did not activate $tag in $STEP_TIMEOUT s"; }
    AGENT_S=$(secs "$t0" "$t1")
    AGENT_XFER_S=$(secs "$t0" "${tx:-$t1}")
    AGENT_HWM=$(hwm_kb "$pid")
    # The agent reports every 200 ms; its counters are final once the chunks are in.
    sleep 0.5
    AGENT_WIRE=$(timeout 30 "$SHOAL" status --tracker "127.0.0.1:$SEED_PORT" --tracker-host seed \
        --identity "$W/$name.id" --json 2>/dev/null | sed -n "s/.*\"host\":\"$name\"//p" | field bytes_down)
    AGENT_HWM=$(( $(hwm_kb "$pid") > AGENT_HWM ? $(hwm_kb "$pid") : AGENT_HWM ))
    stop_pid "$pid"
    AGENT_STORE=$(sum_sizes "$W/$name.root/store/chunks")
    log "$name: all chunks after $AGENT_XFER_S s, current -> $tag after $AGENT_S s; peak RSS $((AGENT_HWM / 1024)) MB; ${AGENT_WIRE:-?} bytes down"
}

log "generating the $PRESET tree"
"$SHOAL" sample --out "$W/tree" --preset "$PRESET" --json > "$W/sample.json"
TREE_FILES=$(field files < "$W/sample.json")
start_seed seed "$W/tree" v1 "$W/seed-store"
RAW=$(field bytes < "$W/seed.out")
CHUNKS=$(field chunks < "$W/seed.out")
WIRE=$(sum_sizes "$W/seed-store/chunks")
# The bytes shoal sends, as one file; and the raw tree as one file.
find "$W/seed-store/chunks" -type f -print0 | sort -z | xargs -0 cat > "$W/bundle.bin"
tar -cf "$W/tree.tar" -C "$W" tree
TAR=$(stat -c %s "$W/tree.tar")
[ "$(stat -c %s "$W/bundle.bin")" -eq "$WIRE" ] || die "bundle.bin is not the size of the chunk store"
log "tree: $TREE_FILES files, $RAW bytes; bundle: $CHUNKS chunks, $WIRE bytes; tar: $TAR bytes"

free_port t
RSYNC_PORT=$PORT
cat > "$W/rsyncd.conf" <<EOF
use chroot = no
uid = $(id -u)
gid = $(id -g)
log file = $W/rsyncd.log
[tree]
path = $W/tree
read only = yes
EOF
rsync --daemon --no-detach --config="$W/rsyncd.conf" --port="$RSYNC_PORT" --address=127.0.0.1 2> "$W/rsyncd.err" &
RSYNCD_PID=$!
PIDS+=("$RSYNCD_PID")
for ((i = 0; i < 50; i++)); do
    [ -n "$(ss -Hltn "sport = :$RSYNC_PORT" 2>/dev/null)" ] && break
    sleep 0.1
done
[ -n "$(ss -Hltn "sport = :$RSYNC_PORT" 2>/dev/null)" ] || { cat "$W/rsyncd.err" >&2; die "rsync --daemon did not start"; }

warm "$W/tree"; warm "$W/seed-store"; cat "$W/bundle.bin" "$W/tree.tar" > /dev/null

# --- rounds ----------------------------------------------------------------------
declare -A T
SHOAL_HWM=0
SHOAL_WIRE=""
RSYNC_WIRE=""
qcopy() { # FILE: sets QSECS
    sync
    QUIC_COPY_ROUNDS=1 QUIC_COPY_TMP="$W" timeout "$STEP_TIMEOUT" "$QCOPY" "$1" > "$W/quic_copy.out" 2>> "$W/quic_copy.log" ||
        { tail -n 5 "$W/quic_copy.log" >&2; die "quic_copy failed on $1"; }
    QSECS=$(field seconds < "$W/quic_copy.out")
}
run_shoal() {
    run_agent "agent$r" v1
    T[shoal]+="$AGENT_S "
    T[xfer]+="$AGENT_XFER_S "
    [ "$AGENT_HWM" -gt "$SHOAL_HWM" ] && SHOAL_HWM=$AGENT_HWM
    SHOAL_WIRE=${AGENT_WIRE:-$AGENT_STORE}
}
run_bundle() { qcopy "$W/bundle.bin"; T[bundle]+="$QSECS "; }
run_tar() { qcopy "$W/tree.tar"; T[tar]+="$QSECS "; }
run_rsync() {
    local t0
    mkdir "$W/rsync.$r"
    sync
    t0=$EPOCHREALTIME
    timeout "$STEP_TIMEOUT" rsync -a --stats "rsync://127.0.0.1:$RSYNC_PORT/tree/" "$W/rsync.$r/" > "$W/rsync.$r.stats" ||
        die "rsync failed"
    T[rsync]+="$(secs "$t0" "$EPOCHREALTIME") "
    RSYNC_WIRE=$(sed -n 's/^Total bytes received: //p' "$W/rsync.$r.stats" | tr -d ',')
}
run_install() {
    local t0
    sync
    t0=$EPOCHREALTIME
    timeout "$STEP_TIMEOUT" "$SHOAL" install v1 --store "$W/seed-store" --root "$W/install.$r" \
        --trust "$W/cluster/deploy.key.pub" --activate --json > /dev/null || die "shoal install failed"
    T[install]+="$(secs "$t0" "$EPOCHREALTIME") "
}

# Other work on the machine skews everything: measure the CPU other processes took.
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# This script's reaped children, plus the seed and rsync daemon (not reaped yet).
pid_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
own_ticks() { echo $(( $(pid_ticks $$) + $(pid_ticks "$SEED_PID") + $(pid_ticks "$RSYNCD_PID") )); }
NCPU=$(getconf _NPROCESSORS_ONLN)
# Waits (at most IDLE_WAIT s) until the whole machine was under 15% busy for 3 s in a row.
wait_idle() {
    local i calm=0 b0 t0 b1 t1 pct=0
    stat2() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }
    for ((i = 0; i < IDLE_WAIT; i++)); do
        read -r b0 t0 < <(stat2); sleep 1; read -r b1 t1 < <(stat2)
        pct=$(( (b1 - b0) * 100 / (t1 > t0 ? t1 - t0 : 1) ))
        if [ "$pct" -lt 15 ]; then calm=$((calm + 1)); else calm=0; fi
        [ "$calm" -ge 3 ] && return 0
    done
    [ "$IDLE_WAIT" -eq 0 ] || log "the machine is still busy ($pct%); going on"
}
OTHER_TICKS=0 MEASURED_S=0
for ((r = 1; r <= ROUNDS; r++)); do
    wait_idle
    log "round $r/$ROUNDS"
    BUSY0=$(busy_ticks); OWN0=$(own_ticks); TT0=$EPOCHREALTIME
    if ((r % 2)); then
        run_shoal; run_bundle; run_tar; run_rsync; run_install
    else
        run_install; run_rsync; run_tar; run_bundle; run_shoal
    fi
    BUSY1=$(busy_ticks); OWN1=$(own_ticks)
    OTHER_TICKS=$((OTHER_TICKS + (BUSY1 - BUSY0) - (OWN1 - OWN0)))
    MEASURED_S=$(awk -v s="$MEASURED_S" -v a="$TT0" -v b="$EPOCHREALTIME" 'BEGIN{print s + b - a}')
done
# A warning light, not a correction: anything above a few percent skews the figures.
OTHER_PCT=$(awk -v o="$OTHER_TICKS" -v hz="$HZ" -v n="$NCPU" -v t="$MEASURED_S" \
    'BEGIN{x=o/hz/(t*n)*100; if (x<0) x=0; printf "%.0f", x}')
SEED_HWM=$(hwm_kb "$SEED_PID")
SEED_UP=$(timeout 30 "$SHOAL" status --tracker "127.0.0.1:$SEED_PORT" --tracker-host seed \
    --identity "$W/seed.id" --json 2>/dev/null | sed -n 's/.*"host":"seed"//p' | field bytes_up || true)
stop_pid "$SEED_PID"

# --- peak memory on a ~1 GB release ------------------------------------------------
MEM_BYTES=0 MEM_S=0 MEM_XFER=0 MEM_HWM=0 MEM_WIRE=0
if [ "$MEMORY" -eq 1 ]; then
    log "memory run: generating the $PRESET tree plus two $EXTRA_MB MB binaries"
    "$SHOAL" sample --out "$W/tree1g" --preset "$PRESET" --json > /dev/null
    mkdir -p "$W/tree1g/extra"
    for f in big1.bin big2.bin; do
        for ((i = 0; i < EXTRA_MB / 2; i++)); do
            head -c 1048576 /dev/urandom
            head -c 1048576 /dev/zero
        done > "$W/tree1g/extra/$f"
    done
    start_seed seed1g "$W/tree1g" v1g "$W/seed1g-store"
    MEM_BYTES=$(field bytes < "$W/seed1g.out")
    warm "$W/seed1g-store"
    wait_idle
    run_agent agentm v1g
    MEM_S=$AGENT_S MEM_XFER=$AGENT_XFER_S MEM_HWM=$AGENT_HWM MEM_WIRE=${AGENT_WIRE:-$AGENT_STORE}
    stop_pid "$SEED_PID"
fi

# --- report ----------------------------------------------------------------------
declare -A M
for k in shoal xfer bundle tar rsync install; do M[$k]=$(median "${T[$k]}"); done
calc() { awk "BEGIN{printf \"$1\", $2}"; }
mbs() { calc "%.1f" "$1 / 1e6 / $2"; }
ratio() { calc "%.2f" "$1 / $2"; }
list() { echo $1 | tr ' ' ','; }
GOAL_MB=150
RSYNC_WIRE=${RSYNC_WIRE:-0}
if [ "$JSON" -eq 1 ]; then
    cat <<EOF
{"preset":"$PRESET","rounds":$ROUNDS,"files":$TREE_FILES,"release_bytes":$RAW,"chunks":$CHUNKS,"bundle_bytes":$WIRE,"tar_bytes":$TAR,\
"shoal":{"seconds":${M[shoal]},"release_mb_s":$(mbs "$RAW" "${M[shoal]}"),"wire_mb_s":$(mbs "$WIRE" "${M[shoal]}"),"bytes_down":${SHOAL_WIRE:-0},"agent_peak_rss_kb":$SHOAL_HWM,"all_s":[$(list "${T[shoal]}")]},\
"shoal_transfer_phase":{"seconds":${M[xfer]},"wire_mb_s":$(mbs "$WIRE" "${M[xfer]}"),"all_s":[$(list "${T[xfer]}")]},\
"quic_copy_bundle":{"seconds":${M[bundle]},"mb_s":$(mbs "$WIRE" "${M[bundle]}"),"release_mb_s":$(mbs "$RAW" "${M[bundle]}"),"all_s":[$(list "${T[bundle]}")]},\
"quic_copy_tar":{"seconds":${M[tar]},"mb_s":$(mbs "$TAR" "${M[tar]}"),"release_mb_s":$(mbs "$RAW" "${M[tar]}"),"all_s":[$(list "${T[tar]}")]},\
"rsync":{"seconds":${M[rsync]},"release_mb_s":$(mbs "$RAW" "${M[rsync]}"),"bytes_received":$RSYNC_WIRE,"all_s":[$(list "${T[rsync]}")]},\
"local_install":{"seconds":${M[install]},"release_mb_s":$(mbs "$RAW" "${M[install]}"),"all_s":[$(list "${T[install]}")]},\
"headline_ratio_vs_bundle_copy":$(ratio "${M[bundle]}" "${M[shoal]}"),"transfer_phase_ratio_vs_bundle_copy":$(ratio "${M[bundle]}" "${M[xfer]}"),\
"ratio_vs_tar_copy":$(ratio "${M[tar]}" "${M[shoal]}"),"ratio_vs_rsync":$(ratio "${M[rsync]}" "${M[shoal]}"),\
"seed_peak_rss_kb":${SEED_HWM:-0},"seed_bytes_up":${SEED_UP:-0},"other_cpu_pct":$OTHER_PCT,\
"memory":{"ran":$([ "$MEMORY" -eq 1 ] && echo true || echo false),"release_bytes":$MEM_BYTES,"bytes_down":$MEM_WIRE,"seconds":$MEM_S,"transfer_seconds":$MEM_XFER,"agent_peak_rss_kb":$MEM_HWM,"goal_kb":$((GOAL_MB * 1024))}}
EOF
    exit 0
fi
cat <<EOF
### Moving one release, seed to one agent on loopback

Tree: \`shoal sample --preset $PRESET\`, $TREE_FILES files, $RAW bytes (release bytes);
bundle: $CHUNKS chunks, $WIRE bytes compressed (wire bytes); tar of the tree: $TAR bytes.
Median of $ROUNDS rounds; MB = 10^6 bytes. Last column: shoal's throughput as a fraction
of the contender's for the same release (= contender's time / shoal's time; > 1: shoal
is faster). Headline: shoal end to end against quic_copy of the bundle bytes.

| contender | bytes on the wire | time (s) | release MB/s | wire MB/s | shoal / it |
|---|---:|---:|---:|---:|---:|
| **shoal**, agent start to \`current\` = v1 | $WIRE | ${M[shoal]} | $(mbs "$RAW" "${M[shoal]}") | $(mbs "$WIRE" "${M[shoal]}") | |
| shoal, agent start to every chunk fetched (install not begun) | $WIRE | ${M[xfer]} | | $(mbs "$WIRE" "${M[xfer]}") | |
| **quic_copy of the bundle bytes** (baseline) | $WIRE | ${M[bundle]} | $(mbs "$RAW" "${M[bundle]}") | $(mbs "$WIRE" "${M[bundle]}") | **$(ratio "${M[bundle]}" "${M[shoal]}")** (transfer phase: $(ratio "${M[bundle]}" "${M[xfer]}")) |
| quic_copy of the tree as tar (reference) | $TAR | ${M[tar]} | $(mbs "$RAW" "${M[tar]}") | $(mbs "$TAR" "${M[tar]}") | $(ratio "${M[tar]}" "${M[shoal]}") |
| rsync -a from rsync --daemon | $RSYNC_WIRE | ${M[rsync]} | $(mbs "$RAW" "${M[rsync]}") | $(mbs "$RSYNC_WIRE" "${M[rsync]}") | $(ratio "${M[rsync]}" "${M[shoal]}") |
| shoal install from a local store (no network) | 0 | ${M[install]} | $(mbs "$RAW" "${M[install]}") | | |

All times (s): shoal ${T[shoal]}(every chunk held at ${T[xfer]}); quic_copy bundle ${T[bundle]}; tar ${T[tar]}; rsync ${T[rsync]}; local install ${T[install]}.
Agent bytes down (tracker): ${SHOAL_WIRE:-?}; seed bytes up over all rounds: ${SEED_UP:-?}.
Peak RSS: agent $((SHOAL_HWM / 1024)) MB, seed $((${SEED_HWM:-0} / 1024)) MB (includes packing).
Other processes used about $OTHER_PCT% of the machine's CPU during the rounds.
EOF
if [ "$MEMORY" -eq 1 ]; then
    cat <<EOF

### Agent peak memory, ~1 GB release

| release bytes | wire bytes | time to \`current\` (s) | every chunk held (s) | release MB/s | agent VmHWM | goal |
|---:|---:|---:|---:|---:|---:|---:|
| $MEM_BYTES | $MEM_WIRE | $MEM_S | $MEM_XFER | $(mbs "$MEM_BYTES" "$MEM_S") | $((MEM_HWM / 1024)) MB | < $GOAL_MB MB |
EOF
fi
