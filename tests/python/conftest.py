"""Shared set-up of the Python tests: where the workspace, its build and the test data are, what
`opal run` computes, a model of the example plugin's operator, and the ONNX backend cases that
tests/conformance/known-failures.md says fail (marked xfail), with a summary of the backend
cases at the end of the run."""

import os
import pathlib
import re
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / "target" / "release"
DATA = pathlib.Path(os.environ.get("OPAL_TEST_DATA", ROOT / ".cache" / "data"))
BACKEND_CLASS = "OnnxBackendNodeModelTest"
MLP = ROOT / "models" / "mlp.onnx"


def opal_run(model, inputs, out_dir):
    """What `opal run` computes for `model` on `inputs` (name -> array), via --output-dir."""
    args = [str(BUILD / "opal"), "run", str(model), "--iterations", "1", "--warmup", "0", "--output-dir", str(out_dir)]
    for name, array in inputs.items():
        path = out_dir / f"{name}.npy"
        np.save(path, array)
        args += ["--input", f"{name}={path}"]
    subprocess.run(args, check=True, capture_output=True)
    return [np.load(out_dir / f"output_{k}.npy") for k in range(len(list(out_dir.glob("output_*.npy"))))]


def swish_model(path):
    graph = helper.make_graph(
        [helper.make_node("Swish", ["x"], ["y"], domain="com.example")],
        "swish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, path)
    return path


def known_failures():
    """The node cases known-failures.md lists (its table rows), with their reasons."""
    text = (ROOT / "tests" / "conformance" / "known-failures.md").read_text()
    rows = re.findall(r"^\| (test_\S+) \| (.*) \|$", text, flags=re.MULTILINE)
    return dict(rows)


def pytest_collection_modifyitems(config, items):
    known = known_failures()
    cpu_only = []
    for item in items:
        if item.cls is None or item.cls.__name__ != BACKEND_CLASS:
            cpu_only.append(item)
            continue
        # Every case is generated once per device; opal runs on the CPU only.
        if not item.name.endswith("_cpu"):
            config.hook.pytest_deselected(items=[item])
            continue
        case = item.name[: -len("_cpu")]
        if case in known:
            item.add_marker(pytest.mark.xfail(reason=known[case], strict=False))
        cpu_only.append(item)
    items[:] = cpu_only


def pytest_terminal_summary(terminalreporter):
    counts = {}
    for outcome in ("passed", "failed", "xfailed", "xpassed", "skipped"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = sum(1 for r in reports if f"::{BACKEND_CLASS}::" in r.nodeid and r.when in ("call", "setup"))
    total = sum(counts.values())
    if total:
        terminalreporter.write_line(
            f"ONNX backend node cases: {counts['passed'] + counts['xpassed']} of {total} pass "
            f"({counts['xpassed']} of them listed in known-failures.md), {counts['xfailed']} fail as "
            f"known-failures.md expects, {counts['failed']} fail unexpectedly, {counts['skipped']} skipped"
        )
