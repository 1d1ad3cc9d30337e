"""Triton's model-control API on `opal serve`, driven by the unmodified tritonclient: a model
loaded with `load_model(config=..., files=...)` (Triton's JSON config and a TOML table),
replaced, unloaded with `unload_model`, loaded again from the deployment, and a load that
fails while the version serving keeps serving; `get_model_repository_index` reflects each."""

import json
import subprocess

import numpy as np
import pytest
import tritonclient.http as http
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import BUILD


def versioned_model(version):
    """y = x · W for x of [1, 4], W of [4, 2] filled with `version`: y = [4v, 4v] for ones."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], [float(version)] * 8)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        "versioned",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def server(tmp_path):
    """`opal serve` of models `a` and `b` (version 1) on an ephemeral loopback port."""
    (tmp_path / "a.onnx").write_bytes(versioned_model(1))
    (tmp_path / "b1.onnx").write_bytes(versioned_model(1))
    (tmp_path / "b2.onnx").write_bytes(versioned_model(2))
    (tmp_path / "deploy.toml").write_text(
        '[[plugins]]\npath = "libopal_core_math.so"\n\n'
        '[[models]]\nname = "a"\npath = "a.onnx"\n\n'
        '[[models]]\nname = "b"\npath = "b1.onnx"\n'
    )
    process = subprocess.Popen(
        [str(BUILD / "opal"), "serve", "--listen", "127.0.0.1:0", "--config", str(tmp_path / "deploy.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "http://" in line, f"opal serve did not start: {line!r}"
        yield http.InferenceServerClient(line.strip().rsplit("http://", 1)[1]), tmp_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def version(client, model):
    x = http.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    y = client.infer(model, [x]).as_numpy("y")
    assert y.shape == (1, 2) and y[0, 0] == y[0, 1], y
    return float(y[0, 0]) / 4


def index(client):
    return {row["name"]: (row["state"], row.get("reason", "")) for row in client.get_model_repository_index()}


def test_a_model_sent_with_a_triton_config_replaces_the_one_serving(server):
    client, _ = server
    assert version(client, "b") == 1
    config = {
        "name": "b",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 0,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1, 2]}],
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    }
    client.load_model("b", config=json.dumps(config), files={"file:1/model.onnx": versioned_model(3)})
    assert client.is_model_ready("b")
    assert version(client, "b") == 3
    assert index(client)["b"] == ("READY", "")
    assert version(client, "a") == 1


def test_unload_and_load_again_from_the_deployment(server):
    client, _ = server
    client.unload_model("b")
    state, reason = index(client)["b"]
    assert state == "UNAVAILABLE" and "unloaded" in reason
    assert not client.is_model_ready("b")
    with pytest.raises(InferenceServerException, match="model 'b' is unavailable: unloaded"):
        version(client, "b")
    client.load_model("b")
    assert index(client)["b"] == ("READY", "")
    assert version(client, "b") == 1


def test_a_toml_table_names_another_file(server):
    client, tmp_path = server
    client.load_model("b", config=f'path = "{tmp_path / "b2.onnx"}"\nmax_concurrent = 2\n')
    assert version(client, "b") == 2


def test_a_failed_load_leaves_the_version_serving_and_says_why(server):
    client, _ = server
    with pytest.raises(InferenceServerException, match="data_type is TYPE_INT64, but the model's is TYPE_FP32"):
        client.load_model(
            "b",
            config=json.dumps({"input": [{"name": "x", "data_type": "TYPE_INT64", "dims": [1, 4]}]}),
            files={"file:1/model.onnx": versioned_model(5)},
        )
    with pytest.raises(InferenceServerException, match="config field 'batcher'"):
        client.load_model("b", config=json.dumps({"batcher": {}}))
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.unload_model("nope")
    assert index(client)["b"] == ("READY", "")
    assert version(client, "b") == 1
