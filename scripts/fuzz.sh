#!/usr/bin/env bash
# The fuzzing campaign: every target of fuzz/ (or those named) under libFuzzer for SECONDS each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      # default 60 s, every target
#   FUZZ_SANITIZER=address scripts/fuzz.sh 600             # with AddressSanitizer
#
# Needs the nightly toolchain (installed beside stable here) and cargo-fuzz, installed from the
# Rust registry when missing. Sanitizer: none by default, chosen for build time: the bugs these
# safe-Rust parsers can have (panics, overflows, OOM over -rss_limit_mb, hangs) libFuzzer
# catches by itself, and ASan makes the cold build of the dependencies (tract, ros2-client)
# much longer on 2 cores. Our own unsafe modules (SIMD GEMM, FFI, V4L2 ioctls) are not on these
# paths, but dependencies' unsafe code is (yuvutils-rs and zune-jpeg SIMD, the zstd / lz4 C
# decoders of MCAP chunks), and only ASan checks that: FUZZ_SANITIZER=address for a deep run.
#
# Per target it prints and appends to fuzz/campaign-results.md (or $FUZZ_RESULTS): executions
# (libFuzzer's stat::number_of_executed_units), coverage (cov: edges, ft: features of the last
# status line), corpus size and crashes (files in fuzz/artifacts/<target>/). A crash: minimise
# it (`cargo +nightly fuzz tmin <target> <file>`), fix the parser, and copy the input to
# fuzz/regressions/<target>/ so `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-60}
shift || true
SANITIZER=${FUZZ_SANITIZER:-none}
RESULTS=${FUZZ_RESULTS:-fuzz/campaign-results.md}

if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
    echo "== installing cargo-fuzz from the Rust registry"
    cargo install cargo-fuzz --locked
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# Release code WITH debug assertions and overflow checks (`-a`): `-O` alone turns them off in
# cargo-fuzz, and an overflow is one of the bugs we are after.
BUILD=(--fuzz-dir fuzz -s "$SANITIZER" -O -a)

echo "== building ${#targets[@]} targets (sanitizer: $SANITIZER)"
cargo +nightly fuzz build "${BUILD[@]}"

{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), ${SECONDS_PER_TARGET} s per target, sanitizer $SANITIZER, $(nproc) CPUs"
    echo
    echo "| target | executions | exec/s | cov (edges) | ft | corpus | crashes |"
    echo "|---|---|---|---|---|---|---|"
} >> "$RESULTS"

status=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    # A private working corpus seeded from the committed one (which stays small).
    work=fuzz/target/corpus/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    find "fuzz/artifacts/$t" -type f | sort > "$log.before"
    echo "== $t: ${SECONDS_PER_TARGET} s"
    set +e
    cargo +nightly fuzz run "${BUILD[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -rss_limit_mb=2048 \
        -timeout=10 > "$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || true)
    corp=$(grep -o 'corp: [0-9]*' <<< "$last" | grep -o '[0-9]*' || true)
    mapfile -t new < <(find "fuzz/artifacts/$t" -type f | sort | comm -13 "$log.before" -)
    rm -f "$log.before"
    crashes=${#new[@]}
    echo "| $t | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $crashes |" | tee -a "$RESULTS"
    if [[ $rc -ne 0 || $crashes -ne 0 ]]; then
        status=1
        echo "   $t failed (exit $rc): log $log; inputs in fuzz/artifacts/$t/" >&2
        tail -n 30 "$log" >&2
        for f in "${new[@]}"; do
            echo "   crash input $f: minimise it with" >&2
            echo "     cargo +nightly fuzz tmin ${BUILD[*]} $t $f" >&2
            echo "   then fix the parser and copy the minimised input to fuzz/regressions/$t/" >&2
        done
    else
        rm -f "$log"
    fi
done
exit $status
