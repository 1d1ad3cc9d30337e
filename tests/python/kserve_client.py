"""Drives a running `opal serve` with the official Triton / KServe v2 Python client.

    python tests/python/kserve_client.py ADDRESS MODEL INPUT.npy EXPECTED.npy

Checks the repository index, the model's metadata, and inference with JSON tensors and with
binary tensors (both must equal EXPECTED.npy, which `opal run --output-dir` wrote for the same
input), then parses /metrics with prometheus_client's own parser and checks the memory figures,
pool hit ratio and per-plugin bytes are there. Exits non-zero with a message on any mismatch.
"""

import sys
import urllib.request

import numpy as np
import tritonclient.http as http
from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def main(address, model, input_path, expected_path):
    client = http.InferenceServerClient(address)
    if not (client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)):
        fail("the server or the model is not ready")
    index = client.get_model_repository_index()
    if not any(entry["name"] == model and entry["state"] == "READY" for entry in index):
        fail(f"{model} is not READY in the repository index: {index}")
    metadata = client.get_model_metadata(model)
    [model_input] = metadata["inputs"]
    [model_output] = metadata["outputs"]
    x = np.load(input_path)
    expected = np.load(expected_path)
    if model_input["datatype"] != "FP32" or list(model_input["shape"]) != list(x.shape):
        fail(f"unexpected input metadata {model_input} for an input of shape {x.shape}")

    for binary in (False, True):
        tensor = http.InferInput(model_input["name"], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = http.InferRequestedOutput(model_output["name"], binary_data=binary)
        result = client.infer(model, [tensor], outputs=[wanted])
        got = result.as_numpy(model_output["name"])
        if got is None or got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-6, atol=1e-7):
            fail(f"binary={binary}: got {got}, opal run gave {expected}")
        print(f"infer with {'binary' if binary else 'JSON'} tensors: equal to opal run")

    text = urllib.request.urlopen(f"http://{address}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "opal_memory_current_bytes",
        "opal_memory_peak_bytes",
        "opal_pool_tensors",
        "opal_pool_hit_ratio",
        "opal_plugin_bytes",
        "opal_plugin_info",
        "opal_requests",
        "opal_request_duration_seconds",
    ):
        if name not in families:
            fail(f"/metrics has no {name}: {sorted(families)}")
    requests = [s for s in families["opal_requests"].samples if s.labels.get("model") == model]
    if not any(s.labels["outcome"] == "success" and s.value >= 2 for s in requests):
        fail(f"/metrics does not count the requests: {requests}")
    plugins = {s.labels["plugin"] for s in families["opal_plugin_bytes"].samples}
    if "core-math" not in plugins:
        fail(f"/metrics has no bytes for core-math: {plugins}")
    print(f"/metrics parses: {len(families)} metric families")


if __name__ == "__main__":
    main(*sys.argv[1:])
