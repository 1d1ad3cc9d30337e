"""The official ONNX backend tests over opal.backend: onnx.backend.test.BackendTest's node
cases, as onnxruntime's onnx_backend_test_series.py runs them. Cases that
tests/conformance/known-failures.md lists (the failures of `opal check`) are expected to fail
(conftest.py marks them xfail); any other failure fails the suite. Tolerances are the ones
`opal check` uses: the defaults, or a case's data.json in the prepared node cases."""

import json

import numpy as np
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


class OpalBackendTest(onnx.backend.test.BackendTest):
    """onnx's BackendTest, with sequence and optional outputs compared as onnxruntime's own
    harness compares them: element by element, and none against none. (onnx's comparison
    recurses into the rows of each sequence element, which fails on 0-d elements.)"""

    @classmethod
    def assert_similar_outputs(cls, ref_outputs, outputs, rtol, atol, model_dir=None):
        np.testing.assert_equal(len(outputs), len(ref_outputs))
        for k, (ref, out) in enumerate(zip(ref_outputs, outputs)):
            if ref is None or out is None:
                assert ref is None and out is None, f"output {k} is {out!r}, expected {ref!r}"
            elif isinstance(ref, (list, tuple)):
                assert isinstance(out, (list, tuple)), f"output {k} is {type(out)}, expected a sequence"
                np.testing.assert_equal(len(out), len(ref), err_msg=f"output {k}: sequence length")
                for ref_element, element in zip(ref, out):
                    super().assert_similar_outputs([ref_element], [element], rtol, atol, model_dir)
            else:
                super().assert_similar_outputs([ref], [out], rtol, atol, model_dir)


backend_test = OpalBackendTest(opal.backend, __name__, test_kwargs=case_tolerances())
# The node cases only: the other kinds download models or are not part of the scoreboard.
OnnxBackendNodeModelTest = backend_test.test_cases["OnnxBackendNodeModelTest"]
