"""Triton's model-control API on `opal serve`, driven by the unmodified tritonclient: a model
loaded with `load_model(config=..., files=...)` (Triton's JSON config and a TOML table),
replaced, unloaded with `unload_model`, loaded again from the deployment, a first load that is
LOADING until its warm-up run ends, and a load that fails while the version serving keeps
serving; `get_model_repository_index` reflects each."""

import json
import subprocess
import threading
import time

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
        '[[plugins]]\npath = "libopal_core_math.so"\n\n[[plugins]]\npath = "libopal_control_flow.so"\n\n'
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
        address = line.strip().rsplit("http://", 1)[1]
        (tmp_path / "address").write_text(address)
        yield http.InferenceServerClient(address), tmp_path
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


def slow_model(steps):
    """y = x + `steps` for x of [1, 4], by a Loop adding 1 `steps` times: a model whose warm-up
    run (and every run) takes about 2 µs a step."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["go_in"], ["go_out"]), helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("go_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1, 4])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "go", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[helper.make_tensor("steps", TensorProto.INT64, [], [steps]), helper.make_tensor("go", TensorProto.BOOL, [], [True])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_first_load_is_loading_until_its_warm_up_run_ends(server):
    client, tmp_path = server
    (tmp_path / "slow.onnx").write_bytes(slow_model(1_000_000))
    # The load blocks its client until the model is published, so it runs on a client of its own.
    loader = http.InferenceServerClient((tmp_path / "address").read_text(), network_timeout=300)
    failures = []

    def load():
        try:
            loader.load_model("c", config=f'path = "{tmp_path / "slow.onnx"}"\n')
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(str(error))

    thread = threading.Thread(target=load)
    thread.start()
    states = []
    refusals = []
    while thread.is_alive():
        state = index(client).get("c")
        if state is not None and state not in states:
            states.append(state)
        if state == ("LOADING", "loading"):
            assert not client.is_model_ready("c")
            x = http.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(np.zeros((1, 4), np.float32))
            try:
                client.infer("c", [x])
                refusals.append("answered")
            except InferenceServerException as error:
                refusals.append(str(error))
        time.sleep(0.005)
    thread.join()
    assert not failures, failures
    assert ("LOADING", "loading") in states, states
    # Every request sent while it loaded was refused (one that raced the publication aside).
    assert refusals and refusals[0] == "[503] model 'c' is loading; send again once the repository index says READY", refusals
    assert index(client)["c"] == ("READY", "")
    x = http.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(client.infer("c", [x]).as_numpy("y"), np.full((1, 4), 1_000_000, np.float32))
    # The models that were serving kept serving throughout.
    assert index(client)["a"] == ("READY", "") and version(client, "a") == 1
