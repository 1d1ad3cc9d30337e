"""deploy/kserve/, checked offline: the manifests parse into the KServe SDK's model classes with
nothing dropped, their core resources validate against Kubernetes' schemas, the Dockerfile is
consistent with the workspace, and the entrypoint, run the way the container runs it (an image
laid out from the Dockerfile's COPY lines, a model directory as KServe mounts it, the
ServingRuntime's arguments and environment), serves models to the KServe v2 REST client, stops
cleanly on SIGTERM, and refuses a model directory it cannot serve with a message naming it."""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import kserve
import kubernetes.client
import kubernetes_validate
import numpy as np
import pytest
import yaml
from kserve import InferInput, InferRequest

from conftest import BUILD, MLP, ROOT, opal_run, swish_model
from test_kserve_client import infer

DEPLOY = ROOT / "deploy" / "kserve"
# The oldest Kubernetes that current KServe releases support; kubernetes-validate bundles its
# schemas (1.25 to 1.37 in the pinned version).
KUBERNETES_VERSION = "1.32"


def manifest(name):
    """The documents of deploy/kserve/NAME."""
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc is not None]


def serving_runtime():
    [runtime] = manifest("servingruntime.yaml")
    return runtime


def inference_service():
    [service] = manifest("inferenceservice.yaml")
    return service


@pytest.fixture
def sdk_with_kubernetes_models(monkeypatch):
    """The SDK's deserialiser looks model classes up in `kserve.models` only, which lacks the
    Kubernetes ones its resources embed (kserve/kserve#2329); lend it those, as the SDK's
    proposed fix does."""
    for name in dir(kubernetes.client.models):
        if name.startswith("V1") and not hasattr(kserve.models, name):
            monkeypatch.setattr(kserve.models, name, getattr(kubernetes.client.models, name), raising=False)


class _Body:
    """What the SDK's `ApiClient.deserialize` reads: a response's JSON text."""

    def __init__(self, document):
        self.data = json.dumps(document)


@pytest.mark.parametrize(
    "file, model_class",
    [("servingruntime.yaml", "V1alpha1ServingRuntime"), ("inferenceservice.yaml", "V1beta1InferenceService")],
)
def test_a_manifest_parses_into_the_kserve_sdk_model_with_nothing_dropped(file, model_class, sdk_with_kubernetes_models):
    [document] = manifest(file)
    api = kserve.ApiClient()
    parsed = api.deserialize(_Body(document), model_class)
    assert type(parsed) is getattr(kserve, model_class)
    # The deserialiser skips keys its classes do not know: a misspelt or misplaced field would
    # vanish here, so the round trip must give back every field of the manifest, unchanged (the
    # SDK adds defaults of its own, such as the model's empty name).
    assert_holds(api.sanitize_for_serialization(parsed), document, file)


def assert_holds(got, wanted, where):
    """Every key of `wanted` is in `got` with the same value, recursively."""
    if isinstance(wanted, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a mapping"
        for key, value in wanted.items():
            assert key in got, f"{where}: the SDK's model has no field {key!r}"
            assert_holds(got[key], value, f"{where}.{key}")
    elif isinstance(wanted, list):
        assert isinstance(got, list) and len(got) == len(wanted), f"{where}: {got!r} != {wanted!r}"
        for k, (g, w) in enumerate(zip(got, wanted)):
            assert_holds(g, w, f"{where}[{k}]")
    else:
        assert got == wanted, f"{where}: {got!r} != {wanted!r}"


def test_the_core_resources_validate_against_kubernetes_schemas():
    runtime = serving_runtime()
    # The runtime's container is what KServe puts into the predictor's pod.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": runtime["metadata"]["name"]},
        "spec": {"containers": runtime["spec"]["containers"]},
    }
    resources = [*manifest("model-storage.yaml"), pod]
    assert [r["kind"] for r in resources] == ["PersistentVolumeClaim", "Pod", "Pod"]
    for resource in resources:
        assert kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    # Strict validation fails on what the schema does not know.
    broken = {**pod, "spec": {"containers": [{**pod["spec"]["containers"][0], "readinesProbe": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def flags(args):
    """`--name=value` arguments as a dict."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def test_the_manifests_agree_with_each_other_and_with_the_entrypoint():
    runtime, service = serving_runtime(), inference_service()
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    args = flags(container["args"])
    assert args == {"model_name": "{{.Name}}", "model_dir": "/mnt/models", "http_port": "8080"}
    [port] = container["ports"]
    assert port["containerPort"] == 8080
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == "8080"

    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert runtime["spec"]["protocolVersions"] == ["v2"] and model["protocolVersion"] == "v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    claim, folder = re.fullmatch(r"pvc://([^/]+)/(.+)", model["storageUri"]).groups()
    volume_claims = [r["metadata"]["name"] for r in manifest("model-storage.yaml") if r["kind"] == "PersistentVolumeClaim"]
    assert claim in volume_claims and folder == MLP.stem


def dockerfile():
    """The Dockerfile's instructions as (INSTRUCTION, [arguments]), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, rest = line.split(None, 1)
            # The exec form (a JSON array) or words.
            instructions.append((op.upper(), json.loads(rest) if rest.startswith("[") else shlex.split(rest)))
    return instructions


def final_stage():
    instructions = dockerfile()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def copies():
    """The final stage's COPY instructions as (from_builder, sources, destination)."""
    found = []
    for op, args in final_stage():
        if op == "COPY":
            options = [a for a in args if a.startswith("--")]
            *sources, destination = [a for a in args if not a.startswith("--")]
            found.append(("--from=builder" in options, sources, destination))
    return found


def deployed_plugins():
    """The plugin files config/default.toml loads: the workspace's shipped plugins."""
    return re.findall(r'^path = "(lib\w+\.so)"', (ROOT / "config" / "default.toml").read_text(), flags=re.MULTILINE)


def test_the_dockerfile_builds_the_shipped_plugins_and_runs_as_a_user():
    instructions = dockerfile()
    bases = [args for op, args in instructions if op == "FROM"]
    assert len(bases) == 2
    builder, runtime = bases
    rust_version = re.search(r'^rust-version = "([\d.]+)"', (ROOT / "Cargo.toml").read_text(), flags=re.MULTILINE)[1]
    rust, debian = re.fullmatch(r"docker\.io/library/rust:([\d.]+)-(\w+)", builder[0]).groups()
    assert rust == rust_version and builder[1:] == ["AS", "builder"]
    assert runtime == [f"docker.io/library/debian:{debian}-slim"]

    # Sources from the build context exist; what comes from the builder is what it builds.
    from_context = [s for from_builder, sources, _ in copies() if not from_builder for s in sources]
    from_context += [s for op, args in instructions[: len(instructions) - len(final_stage())] if op == "COPY" for s in args[:-1]]
    for source in from_context:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    built = [s.removeprefix("/src/target/release/") for from_builder, sources, _ in copies() if from_builder for s in sources]
    assert sorted(built) == sorted(["opal", *deployed_plugins()])
    [cargo_build] = [args for op, args in instructions if op == "RUN" and args[:2] == ["cargo", "build"]]
    packages = {cargo_build[i + 1] for i, a in enumerate(cargo_build) if a == "-p"}
    assert packages == {"opal-runtime"} | {"opal-" + p[len("libopal_") : -3].replace("_", "-") for p in deployed_plugins()}

    [user] = [args for op, args in final_stage() if op == "USER"]
    uid, gid = user[0].split(":")
    assert int(uid) > 0 and int(gid) > 0, "the image must not run as root, with a numeric user for runAsNonRoot"
    [plugin_path] = [args[0] for op, args in final_stage() if op == "ENV" and args[0].startswith("OPAL_PLUGIN_PATH=")]
    assert any(destination == plugin_path.split("=", 1)[1] + "/" for _, _, destination in copies())


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The runtime stage's files, copied from the workspace's build to where its COPY lines put
    them, under a temporary root; with the PATH and OPAL_PLUGIN_PATH the image sets."""
    root = tmp_path_factory.mktemp("image")
    for from_builder, sources, destination in copies():
        for source in sources:
            origin = BUILD / source.removeprefix("/src/target/release/") if from_builder else ROOT / source
            target = root / destination.lstrip("/")
            if destination.endswith("/"):
                target = target / origin.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
    [(op, [entrypoint])] = [(op, args) for op, args in final_stage() if op == "ENTRYPOINT"]
    [plugin_path] = [a.split("=", 1)[1] for op, args in final_stage() if op == "ENV" for a in args if a.startswith("OPAL_PLUGIN_PATH=")]
    environment = {
        "PATH": f"{root}/usr/local/bin:{os.environ['PATH']}",
        "OPAL_PLUGIN_PATH": str(root / plugin_path.lstrip("/")),
    }
    return root / entrypoint.lstrip("/"), environment


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(image, args, env, tmp_path):
    """The entrypoint as the container runs it, its output in files under tmp_path."""
    entrypoint, image_env = image
    out, err = (open(tmp_path / name, "w+") for name in ("stdout", "stderr"))
    process = subprocess.Popen(
        [str(entrypoint), *args],
        env={**image_env, "TMPDIR": str(tmp_path), **env},
        stdout=out,
        stderr=err,
        text=True,
    )
    return process, out, err


def output(file):
    file.flush()
    file.seek(0)
    return file.read()


@contextlib.contextmanager
def serving(image, args, env, port, tmp_path):
    """Yields the base URL once /v2/health/ready answers; then stops the server with SIGTERM and
    checks it exits 0, promptly."""
    process, out, err = start(image, args, env, tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the entrypoint exited ({process.returncode}): {output(err)}"
            assert time.monotonic() < deadline, f"not ready after 60 s: {output(err)}"
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{base_url}/v2/health/ready", timeout=1).status == 200:
                    break
            time.sleep(0.1)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"the server did not stop within 10 s of SIGTERM: {output(err)}")
    # exec: the signal reached opal serve itself, which finished and said so.
    assert code == 0, output(err)
    assert "opal stopped" in output(out)


def test_the_entrypoint_serves_the_model_directory_as_kserve_runs_it(image, tmp_path):
    models = tmp_path / "mnt-models"
    models.mkdir()
    shutil.copy(MLP, models / "mlp.onnx")
    [container] = serving_runtime()["spec"]["containers"]
    name = inference_service()["metadata"]["name"]
    port = free_port()
    args = [
        a.replace("{{.Name}}", name).replace("=/mnt/models", f"={models}").replace("=8080", f"={port}")
        for a in container["args"]
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    x = np.linspace(-1.6, 1.4, 16, dtype=np.float32).reshape(1, 16)
    [expected] = opal_run(MLP, {"x": x}, tmp_path)
    with serving(image, args, {**env, "PORT": str(port)}, port, tmp_path) as base_url:
        tensor = InferInput(name="x", shape=[1, 16], datatype="FP32")
        tensor.set_data_from_numpy(x)
        live, ready, model_ready, response = infer(base_url, InferRequest(model_name=name, infer_inputs=[tensor]), model=name)
        assert live and ready and model_ready
        [probs] = response.outputs
        np.testing.assert_allclose(probs.as_numpy(), expected, rtol=1e-6, atol=1e-7)


def test_a_deploy_toml_serves_a_custom_plugin_from_the_model_directory(image, tmp_path):
    models = tmp_path / "mnt-models"
    (models / "plugins").mkdir(parents=True)
    shutil.copy(BUILD / "libopal_example_swish.so", models / "plugins")
    swish_model(models / "swish.onnx")
    (models / "deploy.toml").write_text(
        '[[plugins]]\npath = "libopal_example_swish.so"\n\n[[models]]\nname = "swish"\npath = "swish.onnx"\n\n'
        '[server]\nlisten = "127.0.0.1:1"\n'
    )
    port = free_port()
    # The port from the environment, as Knative gives it, and the deployment's listen replaced.
    with serving(image, [f"--model_dir={models}"], {"PORT": str(port)}, port, tmp_path) as base_url:
        x = np.array([-2.0, -0.5, 0.0, 3.0], np.float32)
        tensor = InferInput(name="x", shape=[4], datatype="FP32")
        tensor.set_data_from_numpy(x)
        *_, response = infer(base_url, InferRequest(model_name="swish", infer_inputs=[tensor]), model="swish")
        np.testing.assert_allclose(response.outputs[0].as_numpy(), x / (1 + np.exp(-x)), rtol=1e-6)


def missing_plugin(models):
    (models / "plugins").mkdir()
    shutil.copy(MLP, models / "mlp.onnx")
    (models / "deploy.toml").write_text('[[plugins]]\npath = "libmy_ops.so"\n\n[[models]]\nname = "mlp"\npath = "mlp.onnx"\n')


@pytest.mark.parametrize(
    "lay_out, messages",
    [
        (lambda models: None, ["nothing to serve in {models}", "no deploy.toml and no .onnx file", "holds: nothing"]),
        (lambda models: models.rmdir(), ["the model directory {models} does not exist", "storageUri"]),
        (missing_plugin, ["serving {models}/deploy.toml", "plugin file libmy_ops.so does not exist", "{models}/plugins"]),
    ],
    ids=["empty", "absent", "missing-plugin"],
)
def test_a_model_directory_that_cannot_be_served_is_refused_with_its_name(image, tmp_path, lay_out, messages):
    models = tmp_path / "mnt-models"
    models.mkdir()
    lay_out(models)
    process, out, err = start(image, [f"--model_dir={models}", f"--http_port={free_port()}"], {}, tmp_path)
    try:
        code = process.wait(timeout=30)
    finally:
        process.kill()
    stderr = output(err)
    assert code != 0, stderr
    for message in messages:
        assert message.format(models=models) in stderr, stderr
