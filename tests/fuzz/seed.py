#!/usr/bin/env python3
"""Builds the fuzz targets' seed corpora from the test data's real files.

Usage: seed.py DATA_DIR OUT_DIR

DATA_DIR is the test data tests/data/prepare.py writes (.cache/data); OUT_DIR gets one folder
per target (model_plan, deployment_toml, kserve_request, npy, tensor_proto), each file named
by the SHA-1 of its contents, as libFuzzer names what it finds, with the inputs under
tests/fuzz/regressions/<target>/ that once made it fail. The folders are rebuilt on every
call. Only the standard library is needed; with the `onnx` package (the test data's venv has
it) some node-case tensors are also converted to .npy.
"""

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The largest seed each target gets: libFuzzer's -max_len for it.
MODEL_MAX = 1 << 20
OTHER_MAX = 64 << 10


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    for needed in ("node", "light"):
        if not (data / needed).is_dir():
            sys.exit(f"{data / needed} is missing: generate the test data first (tests/run.sh's steps)")
    corpora = {
        "model_plan": model_seeds(data),
        "deployment_toml": deployment_seeds(),
        "kserve_request": request_seeds(),
        "npy": npy_seeds(data),
        "tensor_proto": tensor_proto_seeds(data),
    }
    for target, seeds in corpora.items():
        folder = out / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        limit = MODEL_MAX if target == "model_plan" else OTHER_MAX
        # Inputs that once crashed a target are replayed on every run.
        seeds += [f.read_bytes() for f in sorted((ROOT / "tests/fuzz/regressions" / target).glob("*"))]
        kept = 0
        for seed in seeds:
            if len(seed) <= limit:
                (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
                kept += 1
        print(f"{target}: {kept} seeds in {folder}")


def model_seeds(data):
    """The node cases', fusion cases' and light zoo's models, and the small checked-in ones."""
    files = sorted((data / "node").glob("*/model.onnx"))
    files += sorted((data / "fusion").glob("*/model.onnx"))
    files += sorted((data / "light").glob("*/model.onnx"))
    files += sorted((ROOT / "models").glob("*.onnx"))
    return [f.read_bytes() for f in files]


def tensor_proto_seeds(data):
    """The node cases' input and output tensors."""
    return [f.read_bytes() for f in sorted((data / "node").glob("*/test_data_set_*/*.pb"))]


def deployment_seeds():
    """The checked-in deployments and a few that use every section and key."""
    seeds = [f.read_bytes() for f in sorted((ROOT / "config").glob("*.toml"))]
    seeds.append(
        b"""[engine]
threads = 4
memory_limit = 1073741824
scratch_limit = 1048576
fusion = false
isa = "avx2"

[pool]
max_per_key = 2
bypass_bytes = 4096
preallocate = [{ dtype = "i64", shape = [2, 3] }, { dtype = "bool", shape = [], count = 3 }]

[[plugins]]
path = "plugins/libopal_nn.so"
watch = true

[[plugins]]
dir = "plugins"

[operators]
Relu = "core-math"
"com.microsoft:Attention" = "transformer"

[[models]]
name = "a"
path = "a.onnx"
dims = { batch = 1, seq = 128 }
shapes = { x = [1, 3, 224, 224] }
max_concurrent = 2

[[models]]
name = "b"
path = "/abs/b.onnx"

[run]
model = "b"
iterations = 3
warmup = 0

[server]
listen = "0.0.0.0:9000"
max_request_bytes = 1024
request_timeout_ms = 5
admin_token = "secret"
"""
    )
    seeds.append(b'[engine]\nthreads = 0\n')
    seeds.append(b'[[plugins]]\npath = "a.so"\ndir = "b"\n')
    seeds.append(b'[[models]]\nname = "m"\npath = "m.onnx"\n[[models]]\nname = "m"\npath = "n.onnx"\n')
    seeds.append(b'[pool]\npreallocate = [{ dtype = "string", shape = [1] }]\n')
    seeds.append(b'engine = { threads = "many" }\n\xc3\xa9 = 1\n')
    return seeds


def request_seeds():
    """KServe requests for the fuzz target's fixed model, with and without binary tensors.

    Each seed is a mode byte and a body: `#`, the Inference-Header-Content-Length value and a
    newline before a binary request's body; `@` before a binary request's JSON part, a NUL
    byte and its binary part (the fuzz target works out the header); `-` before a plain JSON
    body.
    """
    half_one = struct.pack("<e", 1.0)

    def binary(inputs, blobs, extra=None):
        header = {"id": "r1", "inputs": inputs, "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}
        if extra:
            header.update(extra)
        head = json.dumps(header).encode()
        return b"#" + str(len(head)).encode() + b"\n" + head + b"".join(blobs)

    def split(inputs, blobs):
        return b"@" + json.dumps({"inputs": inputs}).encode() + b"\0" + b"".join(blobs)

    def plain(inputs):
        return b"-" + json.dumps({"inputs": inputs}).encode()

    def tensor(name, shape, datatype, data=None, size=None):
        t = {"name": name, "shape": shape, "datatype": datatype}
        if data is not None:
            t["data"] = data
        if size is not None:
            t["parameters"] = {"binary_data_size": size}
        return t

    json_inputs = [
        tensor("image", [1, 3, 2], "FP32", [[[0.5, -1.0], [2.0, 3.5], [1e-3, -7.25]]]),
        tensor("ids", [5], "INT64", [1, 2, 3, 4, -9223372036854775808]),
        tensor("mask", [2, 2], "BOOL", [True, False, False, True]),
        tensor("half", [1], "FP16", size=2),
        tensor("raw", [3], "UINT8", [0, 127, 255]),
        tensor("window", [2, 2], "INT32", [[1, -2], [3, 2147483647]]),
    ]
    all_binary = [
        (tensor("image", [2, 3, 2], "FP32", size=48), struct.pack("<12f", *range(12))),
        (tensor("ids", [5], "INT64", size=40), struct.pack("<5q", 1, 2, 3, 4, 5)),
        (tensor("mask", [1, 2], "BOOL", size=2), b"\x01\x00"),
        (tensor("half", [1], "FP16", size=2), half_one),
        (tensor("raw", [], "UINT8", size=1), b"\x07"),
        (tensor("window", [2, 2], "INT32", size=16), struct.pack("<4i", 1, 2, 3, 4)),
    ]
    seeds = [
        binary(json_inputs, [half_one]),
        binary([t for t, _ in all_binary], [b for _, b in all_binary]),
        binary([t for t, _ in reversed(all_binary)], [b for _, b in reversed(all_binary)], {"parameters": {"binary_data_output": True}}),
        plain(json_inputs),
        plain([t for t in json_inputs if t["name"] != "half"]),
        plain(json_inputs + [tensor("extra", [1], "FP32", [1.0])]),
        plain([dict(t, datatype="FP64") if t["name"] == "image" else t for t in json_inputs]),
        plain([dict(t, shape=[-1, 3, 2]) if t["name"] == "image" else t for t in json_inputs]),
        plain([dict(t, shape=[4]) if t["name"] == "ids" else t for t in json_inputs]),
        binary(json_inputs, [half_one + b"trailing"]),
        split(json_inputs, [half_one]),
        split([t for t, _ in all_binary], [b for _, b in all_binary]),
        b"#9999\n{}",
        b"-{\"inputs\": []}",
    ]
    return seeds


def npy_seeds(data):
    """Hand-made .npy files of every supported dtype and header version, a few that must be
    refused, and (with the onnx package) node-case tensors converted."""

    def npy(descr, shape, payload, version=1, fortran=False):
        header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}"
        size_field = "<H" if version == 1 else "<I"
        prefix = 10 if version == 1 else 12
        pad = 64 - (prefix + len(header) + 1) % 64
        header = (header + " " * pad + "\n").encode("latin1" if version < 3 else "utf8")
        return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(size_field, len(header)) + header + payload

    seeds = [
        npy("<f4", [2, 3], struct.pack("<6f", 1.5, -2, 3.25, 0, 7, 8)),
        npy("<f8", [3], struct.pack("<3d", 1, 2, 3)),
        npy("<f2", [2], struct.pack("<2e", 1, -1)),
        npy("|i1", [4], bytes([1, 255, 3, 128])),
        npy("<i2", [2, 1], struct.pack("<2h", -5, 5)),
        npy("<i4", [1, 1, 2], struct.pack("<2i", -5, 5)),
        npy("<i8", [], struct.pack("<q", 42)),
        npy("|u1", [0], b""),
        npy("<u2", [1], struct.pack("<H", 65535)),
        npy("<u4", [1], struct.pack("<I", 1)),
        npy("<u8", [2], struct.pack("<2Q", 1, 2)),
        npy("|b1", [3], b"\x01\x00\x01"),
        npy("<f4", [2, 2], struct.pack("<4f", 1, 2, 3, 4), version=2),
        npy("<f4", [1], struct.pack("<f", 1), version=3),
        npy("<f4", [2, 2], struct.pack("<4f", 1, 2, 3, 4), fortran=True),
        npy(">f4", [1], struct.pack(">f", 1)),
        npy("<c8", [1], b"\x00" * 8),
        npy("<f4", [4], struct.pack("<3f", 1, 2, 3)),
    ]
    try:
        import numpy as np
        from onnx import TensorProto, numpy_helper
    except ImportError:
        return seeds
    import io

    for f in sorted((data / "node").glob("*/test_data_set_0/input_0.pb"))[::8]:
        proto = TensorProto()
        proto.ParseFromString(f.read_bytes())
        try:
            array = numpy_helper.to_array(proto)
        except Exception:
            continue
        if array.dtype == object:
            continue
        buffer = io.BytesIO()
        np.save(buffer, array)
        seeds.append(buffer.getvalue())
    return seeds


if __name__ == "__main__":
    main()
