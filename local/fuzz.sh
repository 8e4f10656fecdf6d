#!/usr/bin/env bash
# Fuzz the request edge (fuzz/, targets over foodsave_auth::http::probe) on stable Rust.
#
#   local/fuzz.sh [seconds] [target...]   run each target for `seconds` (default 60), one
#                                         after another, growing fuzz/corpus/<target>/,
#                                         and print executions, coverage and crashes
#   local/fuzz.sh cmin [target...]        minimize fuzz/corpus/<target>/ (then commit it)
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz@0.13.2`) and a C++ compiler (for
# libFuzzer). cargo-fuzz passes nightly-only flags (-Zsanitizer=address, -Zsanitizer-
# coverage…); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, no nightly needed.
# Crash inputs land in fuzz/artifacts/<target>/; keep a fixed one in
# fuzz/regressions/<target>/, which `cargo test --test fuzz_corpus` replays on stable.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
all=(event_json event_template body refresh_token)
# Release with debug assertions and overflow checks, AddressSanitizer (the default).
flags=(-O -a)

seed() {
    mkdir -p corpus/event_json
    for event in "$root"/events/*.json; do
        cp "$event" "corpus/event_json/events-$(basename "$event")"
    done
}

if [[ "${1:-}" == cmin ]]; then
    shift
    if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all[@]}"); fi
    for t in "${targets[@]}"; do
        echo "== cmin $t: $(find "corpus/$t" -type f | wc -l) files before"
        # Edge coverage only, greedy set cover: a few hundred small files per target.
        cargo fuzz cmin "${flags[@]}" "$t" "corpus/$t" -- \
            -max_len=5000 -use_counters=0 -set_cover_merge=1 >"/tmp/fuzz-cmin-$t.log" 2>&1 ||
            { tail -20 "/tmp/fuzz-cmin-$t.log"; exit 1; }
        echo "   $(find "corpus/$t" -type f | wc -l) files, $(du -sh "corpus/$t" | cut -f1) after"
    done
    seed
    exit 0
fi

seconds=${1:-60}
[[ $# -gt 0 ]] && shift
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all[@]}"); fi
seed
cargo fuzz build "${flags[@]}"
failed=0
printf '%-16s %8s %12s %8s %8s %8s %8s\n' target seconds executions cov ft corpus crashes
for t in "${targets[@]}"; do
    log="$root/fuzz/artifacts/$t.log"
    mkdir -p "artifacts/$t" "corpus/$t"
    before=$(find "artifacts/$t" -type f -name 'crash-*' | wc -l)
    status=0
    # -max_len above the 4 KiB body limit, so oversized bodies are reached.
    cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=5000 -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    crashes=$(($(find "artifacts/$t" -type f -name 'crash-*' | wc -l) - before))
    printf '%-16s %8s %12s %8s %8s %8s %8s\n' "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
    if [[ $status -ne 0 || $crashes -gt 0 ]]; then
        failed=1
        grep -E 'panicked|Breach|ERROR|Test unit written' "$log" | head -5 || true
    fi
done
exit "$failed"
