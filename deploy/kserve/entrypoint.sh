#!/bin/sh
# Runs `opal serve` as a KServe custom runtime: the container's entrypoint.
#
#   entrypoint.sh [--model_name=NAME] [--model_dir=DIR] [--http_port=PORT]
#
# KServe mounts the InferenceService's storageUri at /mnt/models (the model directory); the
# ServingRuntime passes the flags above, as KServe's own runtimes take them (each also as
# `--flag VALUE`). What is served comes from the model directory:
#
# - DIR/deploy.toml, when present, is the deployment, as written (relative paths resolve
#   against DIR). Its [server] listen is replaced by 0.0.0.0:PORT.
# - Otherwise every DIR/*.onnx is served with every plugin found: a deployment that does so is
#   written to a temporary directory and printed. A model is named after its file without
#   `.onnx`, except that a lone model takes NAME (the InferenceService's name), so clients
#   call /v2/models/NAME/infer.
#
# Plugins: bare file names are searched for in DIR/plugins (custom plugins shipped with the
# model) before the image's (OPAL_PLUGIN_PATH, /usr/local/lib/opal/plugins in the image).
#
# Environment: PORT (what Knative sets; --http_port wins; default 8080), OPAL_THREADS (threads
# lent to kernels in the written deployment; default 1), TMPDIR (the written deployment and the
# plugins' shadow copies), and whatever `opal serve` reads (OPAL_ADMIN_TOKEN, OPAL_ISA, RUST_LOG).
#
# The script execs `opal serve`, so SIGTERM reaches the server, which finishes the requests in
# flight and exits 0. It exits 2, naming the directory, when there is nothing to serve.
set -eu

fail() {
    echo "opal-kserve: $*" >&2
    exit 2
}

model_name=""
model_dir=/mnt/models
port="${PORT:-8080}"
while [ $# -gt 0 ]; do
    case "$1" in
        --model_name=*) model_name="${1#*=}" ;;
        --model_dir=*) model_dir="${1#*=}" ;;
        --http_port=*) port="${1#*=}" ;;
        --model_name | --model_dir | --http_port)
            [ $# -ge 2 ] || fail "$1 needs a value"
            case "$1" in
                --model_name) model_name="$2" ;;
                --model_dir) model_dir="$2" ;;
                --http_port) port="$2" ;;
            esac
            shift
            ;;
        *) fail "unknown argument '$1' (expected --model_name, --model_dir, --http_port)" ;;
    esac
    shift
done

case "$port" in
    '' | *[!0-9]*) fail "the port '$port' is not a number (from --http_port or PORT)" ;;
esac
[ -d "$model_dir" ] || fail "the model directory $model_dir does not exist: KServe mounts the InferenceService's storageUri there; give the predictor a storageUri (or --model_dir)"
model_dir=$(cd "$model_dir" && pwd)

image_plugins="${OPAL_PLUGIN_PATH:-/usr/local/lib/opal/plugins}"
if [ -d "$model_dir/plugins" ]; then
    OPAL_PLUGIN_PATH="$model_dir/plugins:$image_plugins"
else
    OPAL_PLUGIN_PATH="$image_plugins"
fi
export OPAL_PLUGIN_PATH

if [ -f "$model_dir/deploy.toml" ]; then
    deployment="$model_dir/deploy.toml"
    echo "opal-kserve: serving $deployment on 0.0.0.0:$port (plugins from $OPAL_PLUGIN_PATH)" >&2
else
    count=0
    for model in "$model_dir"/*.onnx; do
        [ -f "$model" ] && count=$((count + 1))
    done
    if [ "$count" -eq 0 ]; then
        held=$(ls -A "$model_dir" | tr '\n' ' ')
        fail "nothing to serve in $model_dir: it has no deploy.toml and no .onnx file (it holds: ${held:-nothing}). Put a model.onnx, or a deploy.toml naming the models, at the InferenceService's storageUri"
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/opal-kserve.XXXXXX")
    deployment="$work/deploy.toml"
    {
        echo "# Written by opal-kserve: every .onnx file of $model_dir, with every plugin found."
        echo "[engine]"
        echo "threads = ${OPAL_THREADS:-1}"
        old_ifs=$IFS
        IFS=:
        for dir in $OPAL_PLUGIN_PATH; do
            [ -d "$dir" ] || continue
            printf "\n[[plugins]]\ndir = '%s'\n" "$dir"
        done
        IFS=$old_ifs
        for model in "$model_dir"/*.onnx; do
            [ -f "$model" ] || continue
            name=$(basename "$model" .onnx)
            if [ "$count" -eq 1 ] && [ -n "$model_name" ]; then
                name="$model_name"
            fi
            printf "\n[[models]]\nname = '%s'\npath = '%s'\n" "$name" "$model"
        done
    } >"$deployment"
    grep -q '^\[\[plugins\]\]' "$deployment" ||
        fail "no plugin directory exists: OPAL_PLUGIN_PATH is $OPAL_PLUGIN_PATH (the image keeps its plugins in /usr/local/lib/opal/plugins); set OPAL_PLUGIN_PATH to the directory holding the opal plugins"
    echo "opal-kserve: no deploy.toml in $model_dir; serving on 0.0.0.0:$port with this deployment ($deployment):" >&2
    cat "$deployment" >&2
fi

exec opal serve --config "$deployment" --listen "0.0.0.0:$port"
