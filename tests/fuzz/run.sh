#!/usr/bin/env bash
# Fuzzes opal's parsers with cargo-fuzz (libFuzzer, nightly): the ONNX model loader and planner
# with the real plugins, deployment files, KServe request bodies, and .npy and TensorProto
# tensor files. Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Seconds per target: 30 by default (tests/run.sh's brief run); an hour is `run.sh 3600`.
# Targets run $OPAL_FUZZ_JOBS at a time (default 2); corpora grow across runs. Installs the nightly
# toolchain and cargo-fuzz when missing, builds the release plugins, seeds the corpora from the
# test data (.cache/data, from tests/run.sh's steps) and fails on any crash, panic, timeout or
# out-of-memory; what libFuzzer found is kept under .cache/fuzz/ (corpus/, artifacts/, logs/).
#
# tests/fuzz/regressions/<target>/ holds inputs that once failed a target: they are seeds, so
# every run replays them (and each has a regular test beside the code it broke).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-30}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "seconds per target must be a whole number of at least 1, got '$seconds'" >&2
    exit 2
fi
all_targets=(model_plan deployment_toml kserve_request npy tensor_proto)
if (($#)); then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

data=.cache/data
work=.cache/fuzz
if [[ ! -d $data/node || ! -d $data/light ]]; then
    echo "$data has no node cases or light zoo: generate the test data first (tests/run.sh's steps)" >&2
    exit 2
fi

rustup toolchain list | grep -q '^nightly' ||
    rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cargo build --workspace --release
# 16 codegen units build the instrumented crates in about half the time (the default, 1, runs
# somewhat faster); `cargo fuzz run` below must be given the same build options.
build_options=(--fuzz-dir tests/fuzz --codegen-units 16)
cargo +nightly fuzz build "${build_options[@]}"

python=python3
[[ -x .cache/venv/bin/python ]] && python=.cache/venv/bin/python
"$python" tests/fuzz/seed.py "$data" "$work/seeds"

max_len() {
    case $1 in
    model_plan) echo $((1 << 20)) ;;
    *) echo $((64 << 10)) ;;
    esac
}

# Runs one target for the given seconds, its output in $work/logs/<target>.log.
fuzz() {
    local target=$1
    mkdir -p "$work/corpus/$target" "$work/artifacts/$target" "$work/logs"
    cargo +nightly fuzz run "${build_options[@]}" "$target" \
        "$work/corpus/$target" "$work/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$target")" \
        -print_final_stats=1 -artifact_prefix="$work/artifacts/$target/" \
        >"$work/logs/$target.log" 2>&1
}

failed=()
report() {
    local target=$1 status=$2 log=$work/logs/$1.log
    local done execs
    done=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    printf '%-16s execs %-9s %s\n' "$target" "${execs:-?}" \
        "$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+' <<<"$done" || echo 'no final stats')"
    if ((status != 0)); then
        failed+=("$target")
        echo "---- $target failed (exit $status); the end of $log:" >&2
        tail -n 40 "$log" >&2
    fi
}

start=$SECONDS
jobs=${OPAL_FUZZ_JOBS:-2}
if ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
    echo "OPAL_FUZZ_JOBS must be a whole number of at least 1, got '$jobs'" >&2
    exit 2
fi
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    pids=()
    for target in "${batch[@]}"; do
        fuzz "$target" &
        pids+=($!)
    done
    for k in "${!batch[@]}"; do
        status=0
        wait "${pids[k]}" || status=$?
        report "${batch[k]}" "$status"
    done
done
echo "fuzzed ${#targets[@]} targets for ${seconds}s each in $((SECONDS - start))s"
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]}; inputs are in $work/artifacts/<target>/" >&2
    echo "reproduce: cargo +nightly fuzz run ${build_options[*]} TARGET ARTIFACT" >&2
    exit 1
fi
