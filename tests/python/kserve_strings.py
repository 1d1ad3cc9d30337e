"""Drives a running `opal serve` with the official Triton / KServe v2 Python client, on a model
of string inputs and outputs (BYTES tensors).

    python tests/python/kserve_strings.py ADDRESS MODEL

The model normalizes its input `text` (lower case, the stop word "the" dropped) into
`normalized`, and says in `matches` whether each normalized word is all letters. Inference runs
with JSON tensors and with binary tensors; both must give the expected strings. Exits non-zero
with a message on any mismatch.
"""

import sys

import numpy as np
import tritonclient.http as http


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def text_of(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def main(address, model):
    client = http.InferenceServerClient(address)
    if not client.is_model_ready(model):
        fail(f"{model} is not ready")
    metadata = client.get_model_metadata(model)
    [model_input] = metadata["inputs"]
    if model_input["datatype"] != "BYTES":
        fail(f"the input is {model_input['datatype']}, not BYTES")
    words = np.array(["The", "Café", "sat7", "the", "日本"], dtype=object)
    expected = ["cafe", "sat7", "日本"]
    expected_matches = [True, False, False]
    for binary in (False, True):
        tensor = http.InferInput("text", list(words.shape), "BYTES")
        tensor.set_data_from_numpy(words, binary_data=binary)
        wanted = [
            http.InferRequestedOutput("normalized", binary_data=binary),
            http.InferRequestedOutput("matches", binary_data=binary),
        ]
        result = client.infer(model, [tensor], outputs=wanted)
        got = [text_of(v) for v in result.as_numpy("normalized").reshape(-1)]
        matches = result.as_numpy("matches").reshape(-1).tolist()
        if got != expected or matches != expected_matches:
            fail(f"binary={binary}: got {got} {matches}, expected {expected} {expected_matches}")
        print(f"strings with {'binary' if binary else 'JSON'} tensors: as expected")


if __name__ == "__main__":
    main(*sys.argv[1:])
