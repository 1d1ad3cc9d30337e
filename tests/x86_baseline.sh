#!/usr/bin/env bash
# The x86-64 baseline check, which tests/run.sh makes after the release build and the test
# data: runs the release `opal` under qemu-user emulating a CPU without AVX (`-cpu Nehalem`:
# SSE4.2 at most), where it must choose the baseline instruction set and pass `opal check` on
# the light model zoo, the real models (with and without control flow) and the fusion cases. A
# build that let any AVX, AVX2 or AVX-512 instruction run without asking the CPU first stops
# there with SIGILL. Installs
# qemu-user when it is missing; on a host that is not x86-64 there is nothing to check.
set -euo pipefail
cd "$(dirname "$0")/.."

data=${OPAL_TEST_DATA:-.cache/data}
opal=${CARGO_TARGET_DIR:-target}/release/opal
# kind and number of cases that must pass
expected=(light 9 real 5 real-control-flow 3 fusion 10)

fail() {
    echo "x86 baseline: FAILED: $*" >&2
    exit 1
}

[ "$(uname -m)" = x86_64 ] || {
    echo "x86 baseline: not an x86-64 host, nothing to check"
    exit 0
}
started=$SECONDS
tests/apt-install.sh qemu-user || fail "could not install qemu-user"
run=(qemu-x86_64 -cpu Nehalem)

plugins=$("${run[@]}" "$opal" plugins 2>&1) || fail "opal plugins failed under qemu: $plugins"
isa=$(sed -n 's/^Instruction set: //p' <<<"$plugins")
echo "x86 baseline: instruction set under qemu -cpu Nehalem: ${isa:-not reported}"
[[ $isa == baseline\ * ]] || fail "the emulated CPU without AVX did not get the baseline instruction set"

# One process per case, as many at once as there are cores, the largest models first.
cases=()
for ((i = 0; i < ${#expected[@]}; i += 2)); do
    kind=${expected[i]}
    [ -f "$data/$kind/.complete" ] ||
        fail "$data/$kind is not prepared (tests/run.sh makes it with tests/data/prepare.py)"
    found=("$data/$kind"/*/)
    [ ${#found[@]} -eq "${expected[i + 1]}" ] ||
        fail "expected ${expected[i + 1]} $kind cases in $data/$kind, found ${#found[@]}"
    cases+=("${found[@]}")
done
mapfile -t cases < <(for case in "${cases[@]}"; do
    echo "$(du -s "$case" | cut -f1) $case"
done | sort -rn | cut -d' ' -f2-)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
running=0
for ((i = 0; i < ${#cases[@]}; i++)); do
    if [ "$running" -ge "$(nproc)" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    "${run[@]}" "$opal" check "${cases[i]}" >"$out/$i.log" 2>&1 &
    running=$((running + 1))
done
wait || true

passed=$(cat "$out"/*.log | grep -c '^PASS ' || true)
if [ "$passed" -ne ${#cases[@]} ]; then
    grep -h -v '^PASS ' "$out"/*.log | head -40 >&2
    fail "$passed of ${#cases[@]} cases passed on the emulated CPU without AVX"
fi
echo "x86 baseline: all ${#cases[@]} light, real and fusion cases passed in $((SECONDS - started)) s"
