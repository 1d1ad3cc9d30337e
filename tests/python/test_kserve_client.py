"""`opal serve` driven by the KServe Python SDK's v2 REST client (`kserve` on PyPI), as
kserve_client.py drives it with the Triton client: liveness, readiness, and inference with JSON
and with binary tensors, equal to `opal run` on the same input; a bad request is answered with
an error the client raises, and the server keeps serving."""

import asyncio
import subprocess

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from conftest import BUILD, MLP, ROOT, opal_run


@pytest.fixture
def server():
    """`opal serve` on the default deployment, on an ephemeral port of the loopback."""
    process = subprocess.Popen(
        [str(BUILD / "opal"), "serve", "--listen", "127.0.0.1:0", "--config", str(ROOT / "config" / "default.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "http://" in line, f"opal serve did not start: {line!r}"
        yield "http://" + line.strip().rsplit("http://", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def infer(base_url, request, model="mlp"):
    """Liveness, readiness, the model's readiness and the response to `request`, asked of the
    server at `base_url` with the KServe SDK's v2 REST client."""

    async def call():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            live = await client.is_server_live(base_url)
            ready = await client.is_server_ready(base_url)
            model_ready = await client.is_model_ready(base_url, model)
            response = await client.infer(base_url, request, model_name=model)
            return live, ready, model_ready, response
        finally:
            await client.close()

    return asyncio.run(call())


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_the_kserve_client_gets_what_opal_run_computes(server, binary, tmp_path):
    x = np.linspace(-1.6, 1.4, 16, dtype=np.float32).reshape(1, 16)
    [expected] = opal_run(MLP, {"x": x}, tmp_path)
    tensor = InferInput(name="x", shape=[1, 16], datatype="FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = RequestedOutput("probs", parameters={"binary_data": binary})
    request = InferRequest(model_name="mlp", infer_inputs=[tensor], request_outputs=[wanted])
    live, ready, model_ready, response = infer(server, request)
    assert live and ready and model_ready
    [output] = response.outputs
    assert output.name == "probs" and output.datatype == "FP32" and list(output.shape) == [1, 10]
    np.testing.assert_allclose(output.as_numpy(), expected, rtol=1e-6, atol=1e-7)


def test_a_bad_request_is_an_error_the_client_raises(server):
    tensor = InferInput(name="x", shape=[2, 8], datatype="FP32")
    tensor.set_data_from_numpy(np.zeros((2, 8), np.float32))
    with pytest.raises(Exception, match=r"the model takes shape \[1, 16\], the request sends \[2, 8\]"):
        infer(server, InferRequest(model_name="mlp", infer_inputs=[tensor]))
    good = InferInput(name="x", shape=[1, 16], datatype="FP32")
    good.set_data_from_numpy(np.zeros((1, 16), np.float32))
    *_, response = infer(server, InferRequest(model_name="mlp", infer_inputs=[good]))
    assert response.outputs[0].as_numpy().shape == (1, 10)
