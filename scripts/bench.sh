#!/usr/bin/env bash
# Whole-command benchmark: shoal against the plain tools on the `bench` sample tree
# (20,005 files, 517 MB), hot page cache, rounds interleaved, medians reported.
#
#   scripts/bench.sh [--rounds N] [--json] [--keep]
#
# Environment: SHOAL_BENCH_TMP  parent of the work directory (default /var/tmp)
#              ROUNDS           rounds (default 3; --rounds wins)
#
# Compared, each after `sync`, alternating which side goes first:
#   pack     shoal pack (fresh store, default level 1)  vs  tar -cf - | zstd -1 -T0 > file
#   install  shoal install --activate (fresh root)      vs  zstd -dc | tar -xf - ; sync -f
#   audit    shoal audit of the installed copy          vs  b3sum over the same files,
#            one process (its own threads) and two processes (xargs -P2)
# plus the peak RSS (GNU time %M) of every command, and the dedup figure: the 1% edit
# packed as v2 into the same store, new_bytes_stored(v2) / new_bytes_stored(v1).
# Prints a Markdown table (ratio = baseline time / shoal time, > 1: shoal is faster),
# or with --json one JSON object. The work directory is always removed (unless --keep).
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
JSON=0
KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --json) JSON=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $ROUNDS in ''|*[!0-9]*|0) echo "bench.sh: --rounds needs a positive integer" >&2; exit 2 ;; esac

log() { echo "bench: $*" >&2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

# --- tools ---------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -x /usr/bin/time ]; then
    log "installing GNU time"
    $SUDO apt-get install -y time >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y time >&2; }
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v b3sum >/dev/null; then
    log "installing b3sum"
    cargo install b3sum --locked >&2
fi
for t in zstd tar find xargs sort awk; do
    command -v "$t" >/dev/null || { echo "bench.sh: $t is missing" >&2; exit 1; }
done
log "building shoal (release)"
cargo build --release -p shoal-cli >&2
SHOAL="${CARGO_TARGET_DIR:-$REPO/target}/release/shoal"
[ -x "$SHOAL" ] || { echo "bench.sh: $SHOAL not found" >&2; exit 1; }

# --- work directory ------------------------------------------------------------
PARENT=${SHOAL_BENCH_TMP:-/var/tmp}
mkdir -p "$PARENT"
# The tree, plus per round a store (~0.25 GB), an installed copy and an extracted
# copy (~0.52 GB each) and an archive (~0.25 GB).
NEED_KB=$(( (600 + 1600 * ROUNDS) * 1024 ))
AVAIL_KB=$(df -Pk "$PARENT" | awk 'NR==2{print $4}')
if [ "$AVAIL_KB" -lt "$NEED_KB" ]; then
    echo "bench.sh: $PARENT has $((AVAIL_KB / 1024)) MB free; $ROUNDS rounds need about $((NEED_KB / 1024)) MB" >&2
    exit 1
fi
W=$(mktemp -d "$PARENT/shoal-bench.XXXXXX")
cleanup() {
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
# A private copy: the run measures one binary even if the tree is rebuilt meanwhile.
cp "$SHOAL" "$W/shoal"
SHOAL="$W/shoal"

log "work dir $W; generating the bench tree"
"$SHOAL" sample --out "$W/tree" --preset bench --json > "$W/sample.json"
"$SHOAL" key new --out "$W/key" --json > /dev/null
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2"; }
TREE_FILES=$(field files "$W/sample.json")
TREE_BYTES=$(field bytes "$W/sample.json")
# Warm-up: every file read once, so every contender starts from a hot page cache.
# (Not `tar -cf - > /dev/null`: GNU tar skips reading when it writes to /dev/null.)
warm() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }
warm "$W/tree"

# --- timing --------------------------------------------------------------------
declare -A WALL CPU RSS
# timed NAME OUTFILE CMD...: sync, then run CMD under GNU time; records wall seconds,
# CPU seconds (user+sys) and peak RSS in KiB (the largest single process).
timed() {
    local name=$1 out=$2
    shift 2
    sync
    local t0=$EPOCHREALTIME
    /usr/bin/time -f '%U %S %M' -o "$W/time.txt" "$@" > "$out"
    local t1=$EPOCHREALTIME
    local u s m
    read -r u s m < <(tail -n 1 "$W/time.txt")
    WALL[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b-a}') "
    CPU[$name]+="$(awk -v a="$u" -v b="$s" 'BEGIN{printf "%.2f", a+b}') "
    if [ -z "${RSS[$name]:-}" ] || [ "$m" -gt "${RSS[$name]}" ]; then RSS[$name]=$m; fi
}
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

# Every round writes into fresh directories (store.N, root.N, ...) and nothing is
# deleted until the end: deleting thousands of files just before creating thousands
# makes ext4's inode allocator slow (see docs/benchmarks.md), which would bill the
# side that creates many files for the previous round's cleanup.
run_pack_shoal() {
    timed pack_shoal "$W/pack.json" "$SHOAL" pack "$W/tree" --tag bench/1 --store "$W/store.$r" --key "$W/key" --json
}
run_pack_base() {
    timed pack_base /dev/null bash -c 'set -o pipefail; tar -cf - -C "$1" tree | zstd -1 -T0 -q > "$1/tree.$2.tar.zst"' _ "$W" "$r"
}
run_install_shoal() {
    timed install_shoal /dev/null "$SHOAL" install bench/1 --store "$W/store.$r" --root "$W/root.$r" --trust "$W/key.pub" --activate --json
}
run_install_base() {
    mkdir "$W/untar.$r"
    timed install_base /dev/null bash -c 'set -o pipefail; zstd -dc -q "$1/tree.$2.tar.zst" | tar -xf - -C "$1/untar.$2" && sync -f "$1/untar.$2"' _ "$W" "$r"
}
run_audit_shoal() {
    timed audit_shoal /dev/null "$SHOAL" audit --root "$W/root.$r" --json
}
run_audit_b3() {
    timed audit_b3 /dev/null bash -c 'set -o pipefail; find "$1" -type f -print0 | sort -z | xargs -0 b3sum > /dev/null' _ "$REL"
}
run_audit_b3p2() {
    timed audit_b3p2 /dev/null bash -c 'set -o pipefail; find "$1" -type f -print0 | sort -z | xargs -0 -P2 -n 2000 b3sum > /dev/null' _ "$REL"
}

# Other work on the machine skews everything: measure how much CPU other processes
# took during the timed rounds (all CPU time minus what this script's children used).
HZ=$(getconf CLK_TCK)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
own_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$$/stat"; }
BUSY0=$(busy_ticks); OWN0=$(own_ticks); T0=$EPOCHREALTIME
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    if ((r % 2)); then
        run_pack_shoal; run_pack_base
        run_install_shoal; run_install_base
    else
        run_pack_base; run_pack_shoal
        run_install_base; run_install_shoal
    fi
    REL=$(readlink -f "$W/root.$r/current")
    warm "$REL"
    if ((r % 2)); then
        run_audit_shoal; run_audit_b3; run_audit_b3p2
    else
        run_audit_b3p2; run_audit_b3; run_audit_shoal
    fi
done

BUSY1=$(busy_ticks); OWN1=$(own_ticks); T1=$EPOCHREALTIME
OTHER_CORES=$(awk -v b=$((BUSY1 - BUSY0)) -v o=$((OWN1 - OWN0)) -v hz="$HZ" -v t0="$T0" -v t1="$T1" \
    'BEGIN{x = (b - o) / hz / (t1 - t0); if (x < 0) x = 0; printf "%.2f", x}')
if awk -v x="$OTHER_CORES" 'BEGIN{exit !(x > 0.1)}'; then
    log "warning: other processes used $OTHER_CORES cores on average during the timed rounds"
fi

# --- dedup: the next release, 1% of the small files edited --------------------
log "dedup: editing 1% of the small files, packing v2 into the same store"
V1_STORED=$(field new_bytes_stored "$W/pack.json")
V1_CHUNKS=$(field chunks "$W/pack.json")
"$SHOAL" sample --out "$W/tree" --preset bench --edit 1 --seed 5 --json > "$W/edit.json"
EDITED=$(field edited "$W/edit.json")
r=$ROUNDS
timed pack_v2 "$W/pack2.json" "$SHOAL" pack "$W/tree" --tag bench/2 --store "$W/store.$r" --key "$W/key" --json
timed install_v2 /dev/null "$SHOAL" install bench/2 --store "$W/store.$r" --root "$W/root.$r" --trust "$W/key.pub" --activate --json
V2_STORED=$(field new_bytes_stored "$W/pack2.json")
V2_NEW_CHUNKS=$(field new_chunks "$W/pack2.json")
DEDUP=$(awk -v a="$V2_STORED" -v b="$V1_STORED" 'BEGIN{printf "%.4f", a/b}')

# --- report --------------------------------------------------------------------
mb() { awk -v k="$1" 'BEGIN{printf "%.0f", k/1024}'; }
# rows: key @ operation @ shoal key @ baseline key @ baseline description
ROWS=(
    "pack@pack (fresh store)@pack_shoal@pack_base@tar -cf - | zstd -1 -T0"
    "install@install + activate (fresh root)@install_shoal@install_base@zstd -dc | tar -xf - ; sync -f"
    "audit@audit (installed copy)@audit_shoal@audit_b3@find | sort | xargs b3sum (1 process)"
    "audit_p2@audit (installed copy)@audit_shoal@audit_b3p2@find | sort | xargs -P2 -n 2000 b3sum"
)
FSTYPE=$(findmnt -n -o FSTYPE -T "$PARENT" 2>/dev/null | head -n 1 || true)
[ -n "$FSTYPE" ] || FSTYPE=$(stat -f -c %T "$PARENT")
CPU_MODEL=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
NCPU=$(nproc)
if [ "$JSON" -eq 1 ]; then
    {
        printf '{"machine":{"cores":%s,"cpu":"%s","kernel":"%s","work_dir_fs":"%s","other_processes_cores":%s},' \
            "$NCPU" "$CPU_MODEL" "$(uname -r)" "$FSTYPE" "$OTHER_CORES"
        printf '"tree":{"files":%s,"bytes":%s},"rounds":%s,"comparisons":[' "$TREE_FILES" "$TREE_BYTES" "$ROUNDS"
        sep=""
        for row in "${ROWS[@]}"; do
            IFS='@' read -r key op s b desc <<< "$row"
            ms=$(median "${WALL[$s]}"); mbase=$(median "${WALL[$b]}")
            printf '%s{"name":"%s","operation":"%s","baseline":"%s","shoal_s":%s,"baseline_s":%s,"ratio":%s,' \
                "$sep" "$key" "$op" "$desc" "$ms" "$mbase" "$(awk -v a="$mbase" -v b="$ms" 'BEGIN{printf "%.3f", a/b}')"
            printf '"shoal_cpu_s":%s,"baseline_cpu_s":%s,"shoal_peak_rss_mb":%s,"baseline_peak_rss_mb":%s,' \
                "$(median "${CPU[$s]}")" "$(median "${CPU[$b]}")" "$(mb "${RSS[$s]}")" "$(mb "${RSS[$b]}")"
            printf '"shoal_runs_s":[%s],"baseline_runs_s":[%s]}' \
                "$(echo ${WALL[$s]} | tr ' ' ',')" "$(echo ${WALL[$b]} | tr ' ' ',')"
            sep=","
        done
        printf '],"dedup":{"edited_files":%s,"v1_chunks":%s,"v1_new_bytes_stored":%s,"v2_new_chunks":%s,"v2_new_bytes_stored":%s,"ratio":%s,' \
            "$EDITED" "$V1_CHUNKS" "$V1_STORED" "$V2_NEW_CHUNKS" "$V2_STORED" "$DEDUP"
        printf '"pack_v2_s":%s,"install_v2_s":%s,"pack_v2_peak_rss_mb":%s,"install_v2_peak_rss_mb":%s}}\n' \
            "${WALL[pack_v2]% }" "${WALL[install_v2]% }" "$(mb "${RSS[pack_v2]}")" "$(mb "${RSS[install_v2]}")"
    }
else
    echo "shoal bench: $TREE_FILES files, $TREE_BYTES bytes; $ROUNDS rounds, medians; $NCPU cores ($CPU_MODEL); hot page cache"
    echo "work dir on $FSTYPE ($PARENT); other processes used $OTHER_CORES of $NCPU cores on average during the timed rounds"
    echo
    echo "| operation | shoal (s) | baseline | baseline (s) | ratio | shoal CPU (s) | baseline CPU (s) | shoal peak RSS (MB) | baseline peak RSS (MB) |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='@' read -r key op s b desc <<< "$row"
        desc=${desc//|/\\|}
        ms=$(median "${WALL[$s]}"); mbase=$(median "${WALL[$b]}")
        printf '| %s | %.3f | `%s` | %.3f | %.2f | %.2f | %.2f | %s | %s |\n' \
            "$op" "$ms" "$desc" "$mbase" "$(awk -v a="$mbase" -v b="$ms" 'BEGIN{print a/b}')" \
            "$(median "${CPU[$s]}")" "$(median "${CPU[$b]}")" "$(mb "${RSS[$s]}")" "$(mb "${RSS[$b]}")"
    done
    echo
    echo "ratio = baseline time / shoal time (> 1: shoal is faster). Peak RSS: GNU time %M, the largest single process."
    echo
    printf 'dedup: v2 (%s files edited) stored %s new bytes in %s new chunks; v1 stored %s bytes in %s chunks: v2/v1 = %.2f%%\n' \
        "$EDITED" "$V2_STORED" "$V2_NEW_CHUNKS" "$V1_STORED" "$V1_CHUNKS" "$(awk -v d="$DEDUP" 'BEGIN{print 100*d}')"
    printf 'incremental: pack v2 into the same store %.3f s (peak %s MB); install v2 over v1, linking unchanged files, %.3f s (peak %s MB)\n' \
        "${WALL[pack_v2]% }" "$(mb "${RSS[pack_v2]}")" "${WALL[install_v2]% }" "$(mb "${RSS[install_v2]}")"
fi
