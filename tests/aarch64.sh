#!/usr/bin/env bash
# The aarch64 check, which tests/run.sh makes after it has prepared the test data: cross-builds
# the runtime and the plugins for aarch64-unknown-linux-gnu in release, then runs the aarch64
# `opal check` under qemu-user on the light model zoo, the five real models and the three with
# control flow (.cache/data/light/*, real/* and real-control-flow/*), which must all pass, and
# on the fusion cases and the ONNX backend node cases, of which all and those on
# tests/conformance/expected-pass.txt must pass. Installs what it needs when it is missing (the
# rustup target; Debian's cross gcc, arm64 libc and qemu-user) and prints how long each phase
# took.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
data=${OPAL_TEST_DATA:-.cache/data}
# kind and number of cases that must pass
expected=(light 9 real 5 real-control-flow 3 fusion 10)

fail() {
    echo "aarch64: FAILED: $*" >&2
    exit 1
}

phase_started=$SECONDS
all_started=$SECONDS
phase_done() {
    echo "aarch64: $1 took $((SECONDS - phase_started)) s"
    phase_started=$SECONDS
}

for kind in light real real-control-flow fusion node; do
    [ -f "$data/$kind/.complete" ] ||
        fail "$data/$kind is not prepared (tests/run.sh makes it with tests/data/prepare.py)"
done

# 1. Install what is missing; nothing is fetched when everything is there.
if ! rustup target list --installed | grep -qx "$target"; then
    echo "aarch64: rustup target add $target"
    rustup --quiet target add "$target"
fi
tests/apt-install.sh "${packages[@]}" || fail "could not install ${packages[*]}"
phase_done install

# 2. Cross-build; the linker is set for the target in .cargo/config.toml.
cargo build --release --target "$target" \
    -p opal-runtime -p opal-core-math -p opal-tensor-ops -p opal-nn -p opal-transformer \
    -p opal-signal -p opal-control-flow -p opal-ml -p opal-training \
    -p opal-image -p opal-sequence -p opal-text
phase_done cross-build

# 3. The aarch64 `opal check` under qemu-user, with the embedded default deployment, whose
# plugins are found beside the executable. Each model runs in its own process, as many at once
# as there are cores (the default deployment runs kernels on one thread), slowest first so the
# others fill in beside them: under qemu on one core vgg19 takes about 100 s, resnet50 35 s,
# densenet121 27 s, zfnet512 22 s, bvlc_alexnet 18 s, and every other case under 15 s. The
# fusion cases and the node cases take seconds: one process each.
run=(qemu-aarch64 -L "$sysroot")
opal=${CARGO_TARGET_DIR:-target}/$target/release/opal
plugins=$("${run[@]}" "$opal" plugins 2>&1) || fail "opal plugins failed under qemu: $plugins"
isa=$(sed -n 's/^Instruction set: //p' <<<"$plugins")
echo "aarch64: instruction set under qemu: ${isa:-not reported}"
[[ $isa == neon\ * ]] || fail "the emulated run did not choose the neon instruction set"

cases=()
declare -A queued
for name in vgg19 resnet50 densenet121 zfnet512 bvlc_alexnet; do
    if [ -d "$data/light/$name" ]; then
        cases+=("$data/light/$name")
        queued[$data/light/$name]=1
    fi
done
for ((i = 0; i < ${#expected[@]}; i += 2)); do
    for dir in "$data/${expected[i]}"/*/; do
        dir=${dir%/}
        [ -n "${queued[$dir]:-}" ] || cases+=("$dir")
    done
done

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
# check OUTPUT CASE_DIR...
check() {
    local started=$SECONDS out=$results/$1
    shift
    "${run[@]}" "$opal" check "$@" >"$out.out" 2>&1 || true
    echo "$((SECONDS - started))" >"$out.time"
}
node_cases=("$data"/node/*/)
check node "${node_cases[@]%/}"
fusion_cases=("$data"/fusion/*/)
check fusion "${fusion_cases[@]%/}"
jobs=$(nproc)
running=0
for dir in "${cases[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
    check "${dir//\//_}" "$dir" &
    running=$((running + 1))
done
wait

passed=0 failed=0 problems=()
for ((i = 0; i < ${#expected[@]}; i += 2)); do
    kind=${expected[i]} want=${expected[i + 1]} found=0 kind_passed=0
    for dir in "$data/$kind"/*/; do
        dir=${dir%/} name=$(basename "$dir")
        out=$results/${dir//\//_}
        if [ "$kind" = fusion ]; then
            out=$results/fusion
        fi
        found=$((found + 1))
        if grep -qx "PASS $name" "$out.out"; then
            echo "PASS $kind/$name ($(cat "$out.time") s)"
            passed=$((passed + 1)) kind_passed=$((kind_passed + 1))
        else
            failed=$((failed + 1))
            echo "FAIL $kind/$name ($(cat "$out.time") s), opal's output:"
            { grep "^FAIL $name:" "$out.out" || tail -20 "$out.out"; } | sed 's/^/    /'
        fi
    done
    [ "$found" = "$want" ] && [ "$kind_passed" = "$want" ] ||
        problems+=("$kind_passed of $found $kind cases passed (all $want must)")
done
# The node cases: every one on the expected list passes (others may fail: see README,
# Conformance).
lines() { grep -c . || true; }
listed=$(sed 's/#.*//; s/[[:space:]]//g; /^$/d' tests/conformance/expected-pass.txt |
    LC_ALL=C sort -u)
node_passed=$(sed -n 's/^PASS //p' "$results/node.out" | LC_ALL=C sort -u)
unexpected=$(LC_ALL=C comm -23 <(echo "$listed") <(echo "$node_passed"))
echo "node cases: $(lines <<<"$node_passed") of ${#node_cases[@]} passed" \
    "($(lines <<<"$listed") listed) ($(cat "$results/node.time") s)"
if [ -n "$unexpected" ]; then
    no_result=()
    while read -r name; do
        failed=$((failed + 1))
        grep "^FAIL $name:" "$results/node.out" || no_result+=("$name")
    done <<<"$unexpected"
    if [ ${#no_result[@]} -gt 0 ]; then
        echo "no result for ${#no_result[@]} listed node cases (${no_result[*]::3} ...);" \
            "opal's output ends:"
        tail -5 "$results/node.out" | sed 's/^/    /'
    fi
    count=$(lines <<<"$unexpected")
    problems+=("$count node cases on tests/conformance/expected-pass.txt did not pass")
else
    passed=$((passed + $(lines <<<"$listed")))
fi
phase_done "qemu runs ($jobs at once)"
echo "aarch64: all phases took $((SECONDS - all_started)) s"
echo "aarch64: $passed passed, $failed failed"
if [ ${#problems[@]} -gt 0 ]; then
    printf 'aarch64: %s\n' "${problems[@]}" >&2
    fail "every light, real and fusion case and every listed node case must pass on aarch64"
fi
