"""The official ONNX backend tests over opal.backend: onnx.backend.test.BackendTest's node
cases, as onnxruntime's onnx_backend_test_series.py runs them. Cases that
tests/conformance/known-failures.md lists (the failures of `opal check`) are expected to fail
(conftest.py marks them xfail); any other failure fails the suite. Tolerances are the ones
`opal check` uses: the defaults, or a case's data.json in the prepared node cases."""

import json

import onnx.backend.test

import opal.backend
from conftest import DATA


def case_tolerances():
    """Per-case tolerances from the prepared node cases' data.json files."""
    node = DATA / "node"
    tolerances = {}
    for data in sorted(node.glob("*/data.json")):
        declared = json.loads(data.read_text())
        tolerances[data.parent.name] = {k: declared[k] for k in ("rtol", "atol") if k in declared}
    return tolerances


backend_test = onnx.backend.test.BackendTest(opal.backend, __name__, test_kwargs=case_tolerances())
# The node cases only: the other kinds download models or are not part of the scoreboard.
OnnxBackendNodeModelTest = backend_test.test_cases["OnnxBackendNodeModelTest"]
