#!/usr/bin/env bash
# Runs fuzz targets for SECONDS each, from the committed seeds
# (fuzz/seeds/TARGET) and a local corpus that grows as coverage does
# (fuzz/corpus/TARGET, not committed). A crash stops the run and leaves the
# input in fuzz/artifacts/TARGET.
#
#   fuzz/run.sh SECONDS [TARGET ...]      all targets when none is named
#   SANITIZER=none fuzz/run.sh 10         without AddressSanitizer
#   FUZZ_DEBUG=1 ...                      an unoptimized build: compiles in about half
#                                         the time, runs slower (CI's smoke run)
#   FUZZ_SEED=1 ...                       libFuzzer's random seed fixed (CI)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET ...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf gguf_tokenizer hf_dir sparse_files truthfulqa_csv)
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "fuzz: $target for ${seconds}s (sanitizer ${SANITIZER:-address})"
    release=(-O)
    [ -z "${FUZZ_DEBUG:-}" ] || release=(--dev)
    cargo +nightly fuzz run "${release[@]}" --sanitizer "${SANITIZER:-address}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 ${FUZZ_SEED:+-seed=$FUZZ_SEED}
done
