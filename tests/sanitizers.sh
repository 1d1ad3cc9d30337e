#!/usr/bin/env bash
# Memory-safety checks on nightly Rust, in two parts:
#
# 1. AddressSanitizer (with LeakSanitizer): the runtime's unit tests and the integration tests
#    that load, run, unload and hot-swap plugins. The host, the `opal` binary and every plugin
#    library are built with -Zsanitizer=address, so a plugin's instrumentation binds to the one
#    ASan runtime linked into the executable that loads it.
# 2. Miri: the unit tests of opal-plugin-api, whose safe wrappers (tensor views, attributes,
#    the kernel context, scratch, prepared data, parallel_for, the test host) hold the plugin
#    side's unsafe code.
#
# Builds go to .cache/sanitizer-target and .cache/miri-target, away from target/. Installs the
# nightly toolchain with the rust-src and miri components when missing. Exits non-zero when a
# test fails, when any process reports an ASan or LeakSanitizer error, or when Miri finds
# undefined behaviour. Ends with one summary line per part.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

toolchain=nightly
if rustup toolchain list | grep -q "^$toolchain-"; then
    rustup component add --toolchain "$toolchain" rust-src miri
else
    rustup toolchain install "$toolchain" --profile minimal --component rust-src,miri
fi
triple=$(rustc +"$toolchain" -vV | sed -n 's/^host: //p')

# Integration tests left out of the ASan run, because they cannot hold under it:
# - plugin_loading::load_run_unload_100_times bounds resident memory growth over 100
#   load/unload cycles to 1 MiB, and hot_swap::a_soak_with_a_reload_every_two_seconds_stays_flat
#   bounds it to 16 MiB over a minute of serving: ASan holds freed memory in its quarantine
#   (256 MiB) and adds shadow memory, so resident memory grows by design (measured under ASan:
#   +16 MiB over the 100 cycles, +24 MiB over the soak's minute, with no leak reported).
skipped=(
    plugin_loading::load_run_unload_100_times
    hot_swap::a_soak_with_a_reload_every_two_seconds_stays_flat
)
# Integration tests that read process-wide figures (heap allocations of the whole process, the
# plugin libraries left mapped after their unload), which tests running beside them in other
# threads would move: each runs in a process of its own, as cargo nextest runs every test.
isolated=(
    models::after_warm_up_runs_make_zero_heap_allocations
    models::outputs_too_large_for_the_pool_are_reused_without_allocating
    models::a_plugin_that_starts_a_thread_is_reported_left_mapped_at_unload
    models::a_plugin_that_keeps_a_thread_local_with_a_destructor_is_reported_left_mapped
    models::a_plugin_that_does_neither_is_unmapped_at_unload
)

# Prints "<passed> passed, <failed> failed, <ignored> ignored", summed over the "test result:"
# lines of cargo test's output in the files given.
count_results() {
    awk '/^test result:/ {
            for (i = 2; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) p += $(i - 1)
                if ($(i) ~ /^failed;?$/) f += $(i - 1)
                if ($(i) ~ /^ignored;?$/) g += $(i - 1)
            }
        }
        END { printf "%d passed, %d failed, %d ignored", p, f, g }' "$@"
}

summary=()
status=0

# ---- Part 1: AddressSanitizer -------------------------------------------------------------
asan_started=$SECONDS
asan_target=$root/.cache/sanitizer-target
reports=$asan_target/asan-reports
logs=$asan_target/logs
rm -rf "$reports" "$logs"
mkdir -p "$reports" "$logs"

# The target is named (through CARGO_BUILD_TARGET rather than --target, so that the cargo the
# integration tests run to build fixture variants inherits it) so that RUSTFLAGS reach only
# target code: build scripts and proc macros, loaded into rustc, stay uninstrumented. std is
# not rebuilt with ASan (-Zbuild-std): opal's code, its dependencies' and std's generic code
# they instantiate are instrumented, and ASan intercepts every malloc and free; std's own
# compiled code is only unchecked, which makes no false reports.
#
# rustc links the static ASan runtime into each executable but exports only its interceptors
# (malloc, free, dlopen, ...) dynamically, not the __asan_* entry points instrumented code
# calls: a sanitized plugin would then fail to load ("undefined symbol:
# __asan_option_detect_stack_use_after_return"). --export-dynamic-symbol exports them from the
# executables, so plugins bind to the host's runtime instead of carrying one of their own.
# Frame pointers give ASan's fast unwinder whole stacks for allocations and frees.
asan_flags="-Zsanitizer=address -Cforce-frame-pointers=yes"
asan_flags+=" -Clink-arg=-Wl,--export-dynamic-symbol=__asan_*"
# The dev profile with line tables only, and XXH3 optimised: full debug info makes plugin
# libraries of up to 170 MB, which the loader copies and hashes (XXH3) on every load and on
# every probe; unoptimised hashing of them under ASan made reloads too slow for the hot-swap
# test's pace (20 in 30 s). Line tables are all a report needs. (opt-level 1 throughout would
# do as well for the tests but triples the build time.)
#
# detect_leaks=1: LeakSanitizer checks every process at exit (the test binaries, each `opal`
# run, and each server, stopped with SIGTERM), so a plugin table or library copy leaked at
# unload is reported. log_path sends every report, of any process, to a file of its own in
# $reports: their presence fails the run even where the process's exit status was expected to
# be a failure (the CLI tests check that `opal` refuses bad input).
asan_env=(
    CARGO_TARGET_DIR="$asan_target"
    CARGO_BUILD_TARGET="$triple"
    RUSTFLAGS="$asan_flags"
    RUSTDOCFLAGS="$asan_flags"
    CARGO_PROFILE_DEV_DEBUG=line-tables-only
    ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan"
    # Fixture variants, built by the tests, go beside the sanitized build with its flags.
    OPAL_FIXTURE_TARGET_DIR="$asan_target/fixtures"
    # Plugins are found beside the sanitized binaries, never on a path from the environment.
    OPAL_PLUGIN_PATH=
    RUST_BACKTRACE=0
)
asan_config=(--config 'profile.dev.package.xxhash-rust.opt-level=3')

# Runs `cargo +nightly <args>` with the ASan environment, its output shown and kept in
# $logs/<name>.log.
asan_cargo() {
    local name=$1
    shift
    env "${asan_env[@]}" cargo +"$toolchain" "${asan_config[@]}" "$@" 2>&1 | tee "$logs/$name.log"
}

echo "== AddressSanitizer: building the workspace (plugins, fixtures, opal) for $triple"
if asan_cargo build build --workspace; then
    echo "== AddressSanitizer: opal-runtime unit tests"
    asan_cargo runtime test -p opal-runtime --lib --no-fail-fast || status=1

    echo "== AddressSanitizer: integration tests of plugin loading, unloading and hot swap"
    # plugin_loading and hot_swap load, run, refuse and replace plugin libraries; models drops
    # engines, unloading their plugins, after panicking, failing and scratch-hungry kernels
    # and plugins that pin themselves in memory (the filter also matches bad_models::, whose
    # refused models build and drop engines too); cli runs the `opal` binary, which probes each
    # plugin in a child process, loads it, and unloads it at exit.
    skip_args=()
    for name in "${skipped[@]}" "${isolated[@]}"; do
        skip_args+=(--skip "$name")
    done
    asan_cargo integration test -p opal-tests --test integration --no-fail-fast -- \
        plugin_loading:: hot_swap:: models:: cli:: "${skip_args[@]}" || status=1
    for name in "${isolated[@]}"; do
        asan_cargo "isolated-${name##*::}" test -p opal-tests --test integration -- \
            --exact "$name" || status=1
        if ! grep -q "^test result: .* 1 passed" "$logs/isolated-${name##*::}.log"; then
            echo "error: test $name did not run" >&2
            status=1
        fi
    done
else
    status=1
fi

report_files=$(find "$reports" -type f | sort)
report_count=$(printf '%s' "$report_files" | grep -c . || true)
if [ "$report_count" -gt 0 ]; then
    status=1
    echo "== AddressSanitizer reports"
    while read -r report; do
        echo "--- $report"
        cat "$report"
    done <<<"$report_files"
fi
runtime_result="not run"
integration_result="not run"
if [ -f "$logs/runtime.log" ]; then
    runtime_result=$(count_results "$logs/runtime.log")
    integration_result=$(count_results "$logs"/integration.log "$logs"/isolated-*.log)
fi
summary+=("AddressSanitizer: runtime unit tests $runtime_result; integration tests $integration_result; $report_count ASan/LSan reports; left out: ${skipped[*]}; $((SECONDS - asan_started)) s")

# ---- Part 2: Miri ---------------------------------------------------------------------------
miri_started=$SECONDS
miri_target=$root/.cache/miri-target
mkdir -p "$miri_target"
# Under both of Miri's aliasing models: Stacked Borrows (the default) and Tree Borrows. The
# second run only interprets again (about 10 s); nothing is rebuilt. Without the ASan flags:
# cargo-miri sets its own.
miri_results=""
for model in stacked tree; do
    echo "== Miri ($model borrows): opal-plugin-api unit tests"
    miri_flags=""
    [ "$model" = stacked ] || miri_flags="-Zmiri-$model-borrows"
    env -u RUSTFLAGS -u RUSTDOCFLAGS CARGO_TARGET_DIR="$miri_target" MIRIFLAGS="$miri_flags" \
        cargo +"$toolchain" miri test -p opal-plugin-api --lib --no-fail-fast 2>&1 |
        tee "$miri_target/miri-$model.log" || status=1
    miri_results+="$model borrows $(count_results "$miri_target/miri-$model.log"); "
done
miri_ignored=$(sed -n 's/^test \(.*\) \.\.\. ignored, \(.*\)$/\1 (\2)/p' \
    "$miri_target/miri-stacked.log" | paste -sd ';' -)
summary+=("Miri: opal-plugin-api unit tests, ${miri_results}ignored under Miri: ${miri_ignored:-none}; $((SECONDS - miri_started)) s")

echo
echo "== Summary"
printf '%s\n' "${summary[@]}"
exit "$status"
