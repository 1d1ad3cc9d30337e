"""Writes mlp.onnx, the small model of the default deployment.

A 3-layer perceptron on a [1, 16] input: MatMul+Add, ReLU, Gemm (transB), Tanh, MatMul+Add,
Softmax -> probs [1, 10]; opset 17, weights from a seeded generator. Each initializer's raw
bytes are placed at a 64-byte aligned offset in the file (by padding doc strings), so opal uses
them in place from the memory-mapped file.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install onnx==1.23.2 numpy
    /tmp/v/bin/python models/make_mlp.py models/mlp.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGN = 64


def build():
    rng = np.random.default_rng(7)

    def weight(name, shape):
        scale = 1.0 / np.sqrt(shape[0])
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        weight("w1", (16, 32)),
        weight("b1", (32,)),
        weight("w2", (32, 32)),
        weight("b2", (32,)),
        weight("w3", (32, 10)),
        weight("b3", (10,)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
        helper.make_node("Relu", ["h1b"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2", transB=1),
        helper.make_node("Tanh", ["h2"], ["a2"], name="tanh2"),
        helper.make_node("MatMul", ["a2", "w3"], ["h3"], name="fc3"),
        helper.make_node("Add", ["h3", "b3"], ["logits"], name="fc3_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="opal make_mlp.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def offset_of(model, tensor):
    data = model.SerializeToString()
    at = data.find(tensor.raw_data)
    assert at >= 0 and data.find(tensor.raw_data, at + 1) < 0, "raw bytes must be unique"
    return at


def align(model):
    """Pads the doc string before each initializer until its raw bytes start 64-byte aligned."""
    inits = model.graph.initializer
    for i, tensor in enumerate(inits):
        pad_field = (lambda s: setattr(model, "doc_string", s)) if i == 0 else (
            lambda s, prev=inits[i - 1]: setattr(prev, "doc_string", s))
        for pad in range(0, 4 * ALIGN):
            pad_field(" " * pad)
            if offset_of(model, tensor) % ALIGN == 0:
                break
        else:
            raise SystemExit(f"cannot align {tensor.name}")


if __name__ == "__main__":
    model = build()
    align(model)
    onnx.save(model, sys.argv[1] if len(sys.argv) > 1 else "mlp.onnx")
