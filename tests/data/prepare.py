"""Prepares the test data opal is checked against, in the ONNX backend-test layout.

Each case is a directory holding `model.onnx` and `test_data_set_0/input_<k>.pb`,
`output_<k>.pb` (ONNX TensorProto files). Written under the directory given as argument:

- `node/<case>`: the ONNX backend node cases, generated from the `onnx` package's own case
  definitions (`onnx.backend.test.case.node.collect_testcases`).
- `light/<model>`: the 9 "light" model-zoo models shipped in the `onnx` wheel, with zero inputs
  and the reference outputs shipped beside them.
- `real/<model>`: real models taken from PyPI wheels (YOLOv8n from nudenet, PP-OCR detection and
  direction classification from rapidocr-onnxruntime), with seeded random inputs and reference
  outputs from onnxruntime on one thread.

Run inside the venv that tests/run.sh makes; each part is skipped when its directory holds a
`.complete` marker from an earlier run.

    python tests/data/prepare.py .cache/data
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper

# The onnx package's tolerances for its light model cases (onnx.backend.test.case.model).
LIGHT_TOLERANCES = {"densenet121": (2e-3, 1e-7)}

REAL_MODELS = [
    # (case name, wheel requirement, path inside the wheel, input shape)
    ("yolov8n_320", "nudenet==3.4.2", "nudenet/320n.onnx", (1, 3, 320, 320)),
    (
        "ppocr_v4_det",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        (1, 3, 640, 640),
    ),
    (
        "ppocr_mobile_v2_cls",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        (1, 3, 48, 192),
    ),
]


def fresh(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)


def write_case(case_dir, model_bytes, inputs, outputs):
    """Writes one case: `inputs` and `outputs` are lists of TensorProto."""
    fresh(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model_bytes)
    data = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(data)
    for prefix, tensors in (("input", inputs), ("output", outputs)):
        for k, tensor in enumerate(tensors):
            with open(os.path.join(data, f"{prefix}_{k}.pb"), "wb") as f:
                f.write(tensor.SerializeToString())


def write_tolerance(case_dir, rtol, atol, why):
    """Records the case's tolerances in data.json, as the ONNX backend tests' model cases do."""
    with open(os.path.join(case_dir, "data.json"), "w") as f:
        json.dump({"rtol": rtol, "atol": atol, "why": why}, f, indent=1)


def done(path):
    return os.path.exists(os.path.join(path, ".complete"))


def mark_done(path):
    open(os.path.join(path, ".complete"), "w").close()


def to_proto(value, name):
    """A TensorProto for a test value; sequences, maps and optionals are written as onnx does."""
    if isinstance(value, onnx.TensorProto):
        return value
    if isinstance(value, list):
        return numpy_helper.from_list(value, name)
    if isinstance(value, dict):
        return numpy_helper.from_dict(value, name)
    if value is None:
        return numpy_helper.from_optional(None, name)
    return numpy_helper.from_array(np.asarray(value), name)


def node_cases(out):
    if done(out):
        return
    fresh(out)
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for case in cases:
        case_dir = os.path.join(out, case.name)
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ins = [to_proto(v, graph.input[k].name) for k, v in enumerate(inputs)]
            outs = [to_proto(v, graph.output[k].name) for k, v in enumerate(outputs)]
            if i == 0:
                write_case(case_dir, case.model.SerializeToString(), ins, outs)
            else:
                data = os.path.join(case_dir, f"test_data_set_{i}")
                os.makedirs(data)
                for prefix, tensors in (("input", ins), ("output", outs)):
                    for k, tensor in enumerate(tensors):
                        with open(os.path.join(data, f"{prefix}_{k}.pb"), "wb") as f:
                            f.write(tensor.SerializeToString())
    mark_done(out)
    print(f"prepare: {len(cases)} node cases in {out}")


def light_models(out):
    if done(out):
        return
    fresh(out)
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    names = sorted(f[len("light_") : -len(".onnx")] for f in os.listdir(light) if f.endswith(".onnx"))
    for name in names:
        model_path = os.path.join(light, f"light_{name}.onnx")
        model = onnx.load(model_path)
        inits = {i.name for i in model.graph.initializer}
        inputs = []
        for x in model.graph.input:
            if x.name in inits:
                continue
            shape = [d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim]
            inputs.append(numpy_helper.from_array(np.zeros(shape, np.float32), x.name))
        outputs = [
            onnx.load_tensor(os.path.join(light, f"light_{name}_output_{k}.pb"))
            for k in range(len(model.graph.output))
        ]
        with open(model_path, "rb") as f:
            write_case(os.path.join(out, name), f.read(), inputs, outputs)
        rtol, atol = LIGHT_TOLERANCES.get(name, (1e-3, 1e-7))
        write_tolerance(os.path.join(out, name), rtol, atol, "the onnx package's own tolerances for this model")
    mark_done(out)
    print(f"prepare: {len(names)} light models in {out}")


def real_models(out):
    if done(out):
        return
    import onnxruntime as ort

    fresh(out)
    with tempfile.TemporaryDirectory() as wheels:
        for name, requirement, member, shape in REAL_MODELS:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", wheels],
                check=True,
            )
            wheel = next(
                os.path.join(wheels, w)
                for w in os.listdir(wheels)
                if w.startswith(requirement.split("==")[0].replace("-", "_"))
            )
            with zipfile.ZipFile(wheel) as z:
                model_bytes = z.read(member)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
            x = session.get_inputs()[0]
            value = np.random.default_rng(0).random(shape, np.float32)
            results = session.run(None, {x.name: value})
            outputs = [
                numpy_helper.from_array(r, o.name) for r, o in zip(results, session.get_outputs())
            ]
            write_case(
                os.path.join(out, name),
                model_bytes,
                [numpy_helper.from_array(value, x.name)],
                outputs,
            )
            write_tolerance(
                os.path.join(out, name),
                1e-3,
                1e-6,
                "onnxruntime's Sigmoid is a polynomial approximation with absolute errors up to 1e-7 "
                "(relative errors above 100% below -16), so its references are only good to about "
                "1e-7 absolute; atol 1e-6 leaves that margin",
            )
    mark_done(out)
    print(f"prepare: {len(REAL_MODELS)} real models in {out}")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else ".cache/data"
    node_cases(os.path.join(root, "node"))
    light_models(os.path.join(root, "light"))
    real_models(os.path.join(root, "real"))
