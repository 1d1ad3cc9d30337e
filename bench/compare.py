"""Compares opal with onnxruntime (and tract, where its Python package runs the model) on the
same models, inputs and thread count, measured alternately in one run of this script.

    .cache/venv/bin/python bench/compare.py [--threads N] [--rounds R] [--iterations K] [MODEL...]

Models are the prepared test cases (tests/run.sh makes them under .cache/data): the light zoo's
ResNet-50, SqueezeNet, VGG-19, Inception-v1, DenseNet-121 and the real YOLOv8n 320, PP-OCRv4 det,
PP-OCR cls, PP-OCRv4 rec and the ddddocr LSTM recogniser. For each round and model,
onnxruntime (intra_op_num_threads=N, inter_op_num_threads=1, sequential execution) and `opal bench --json --threads N` each time K
runs after warm-up; the table gives each runtime's median over all its runs, opal/onnxruntime,
and the geometric mean of the ratios. With N above 1, each round also times opal on one thread,
and the table adds opal's speed-up from the N threads.

`--isa avx2,baseline` also times opal with its kernels capped to each of those instruction sets
(`OPAL_ISA`), and `--other-opal PATH` another build of the `opal` binary (at its best, or capped
to each of `--other-isa avx2,...`), all in the same rounds, as extra columns with their ratio to
opal. The header names the CPU (`lscpu`), the instruction
set opal's kernels used, and onnxruntime's version (onnxruntime picks its own kernels by CPUID).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, ".cache", "data")
OPAL = os.path.join(ROOT, "target", "release", "opal")
MODELS = {
    "resnet50": "light/resnet50",
    "squeezenet": "light/squeezenet",
    "vgg19": "light/vgg19",
    "inception_v1": "light/inception_v1",
    "densenet121": "light/densenet121",
    "yolov8n_320": "real/yolov8n_320",
    "ppocr_v4_det": "real/ppocr_v4_det",
    "ppocr_cls": "real/ppocr_mobile_v2_cls",
    "ppocr_v4_rec": "real/ppocr_v4_rec",
    "ddddocr_lstm": "real/ddddocr_lstm",
}


def case(name):
    directory = os.path.join(DATA, MODELS[name])
    model = os.path.join(directory, "model.onnx")
    input_pb = os.path.join(directory, "test_data_set_0", "input_0.pb")
    graph = onnx.load(model, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    input_name = next(i.name for i in graph.input if i.name not in inits)
    value = numpy_helper.to_array(onnx.load_tensor(input_pb))
    return model, input_name, input_pb, value


def time_onnxruntime(model, input_name, value, threads, warmup, iterations):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, {input_name: value})
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, {input_name: value})
        times.append((time.perf_counter() - start) * 1e3)
    return times


def cpu_model():
    """The CPU as lscpu reports it: model name, family and model, and its vector extensions."""
    try:
        out = subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = fields.get("Flags", "").split()
    vector = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma", "asimd") if f in flags]
    return (f"{fields.get('Model name', platform.machine())} (family {fields.get('CPU family', '?')}, "
            f"model {fields.get('Model', '?')}; {' '.join(vector) or 'no AVX'})")


def time_opal(model, input_name, input_pb, threads, warmup, iterations, binary=OPAL, isa=None):
    env = dict(os.environ)
    env.pop("OPAL_ISA", None)
    if isa:
        env["OPAL_ISA"] = isa
    out = subprocess.run(
        [binary, "bench", model, "--input", f"{input_name}={input_pb}", "--threads", str(threads),
         "--warmup", str(warmup), "--iterations", str(iterations), "--json"],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout)


def time_tract(model, input_name, value, warmup, iterations):
    """tract's Python package, single-threaded as it runs; None where it cannot run the model."""
    try:
        import tract
    except ImportError:
        return None
    try:
        runnable = tract.onnx().model_for_path(model).into_optimized().into_runnable()
        for _ in range(warmup):
            runnable.run([value])
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            runnable.run([value])
            times.append((time.perf_counter() - start) * 1e3)
        return times
    except Exception:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tract", action="store_true", help="also time tract (pip install tract)")
    parser.add_argument("--isa", default="", help="also time opal capped to these instruction sets (comma-separated)")
    parser.add_argument("--other-opal", help="also time this other build of the opal binary")
    parser.add_argument("--other-isa", default="",
                        help="time the other build capped to each of these instruction sets (comma-separated) "
                             "instead of at its best")
    args = parser.parse_args()

    # Extra opal columns: (label, binary, OPAL_ISA).
    variants = [(f"opal {isa}", OPAL, isa) for isa in args.isa.split(",") if isa]
    if args.other_opal:
        other_isas = [isa for isa in args.other_isa.split(",") if isa] or [None]
        variants += [(f"other opal {isa}" if isa else "other opal", args.other_opal, isa) for isa in other_isas]
    results = {
        name: {"ort": [], "opal": [], "opal_1": [], "tract": [], "allocs": set(), "isa": set(),
               "variants": {label: [] for label, _, _ in variants}}
        for name in args.models
    }
    for _ in range(args.rounds):
        for name in args.models:
            model, input_name, input_pb, value = case(name)
            r = results[name]
            r["ort"] += time_onnxruntime(model, input_name, value, args.threads, args.warmup, args.iterations)
            bench = time_opal(model, input_name, input_pb, args.threads, args.warmup, args.iterations)
            r["opal"].append(bench["median_ms"])
            r["allocs"].add(bench["allocations_per_run"])
            r["isa"].add(bench.get("isa", "?"))
            for label, binary, isa in variants:
                other = time_opal(model, input_name, input_pb, args.threads, args.warmup, args.iterations, binary, isa)
                r["variants"][label].append(other["median_ms"])
            if args.threads > 1:
                # opal on one thread too, in the same round: its own speed-up from the threads.
                r["opal_1"].append(time_opal(model, input_name, input_pb, 1, args.warmup, args.iterations)["median_ms"])
            if args.tract and args.threads == 1:
                r["tract"] += time_tract(model, input_name, value, args.warmup, args.iterations) or []

    isas = sorted(set().union(*(r["isa"] for r in results.values())))
    print(f"opal vs onnxruntime {ort.__version__}, {args.threads} thread(s), {args.rounds} rounds × "
          f"{args.iterations} runs, {platform.machine()} {os.cpu_count()} cores, {datetime.date.today()}")
    print(f"CPU: {cpu_model()}; opal's kernels: {', '.join(isas)}; onnxruntime: its own choice by CPUID")
    print()
    scaling = args.threads > 1
    extra = " opal 1 thread ms | opal speed-up |" if scaling else ""
    # The other build capped to an instruction set compares with opal capped to the same one.
    def baseline(label, binary, isa):
        return f"opal {isa}" if binary != OPAL and isa and f"opal {isa}" in labels else None

    labels = [label for label, _, _ in variants]
    extra += "".join(f" {label} ms | {label}/{baseline(label, binary, isa) or 'opal'} |"
                     for label, binary, isa in variants)
    print(f"| model | onnxruntime ms | opal ms | opal/onnxruntime | tract ms | opal allocations/run |{extra}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if scaling else "") + "---:|---:|" * len(variants))
    ratios = []
    for name in args.models:
        r = results[name]
        ort_ms, opal_ms = statistics.median(r["ort"]), statistics.median(r["opal"])
        ratio = opal_ms / ort_ms
        ratios.append(ratio)
        tract_ms = f"{statistics.median(r['tract']):.1f}" if r["tract"] else "–"
        allocs = ", ".join(f"{a:g}" for a in sorted(r["allocs"]))
        row = f"| {name} | {ort_ms:.1f} | {opal_ms:.1f} | {ratio:.2f} | {tract_ms} | {allocs} |"
        if scaling:
            one = statistics.median(r["opal_1"])
            row += f" {one:.1f} | {one / opal_ms:.2f}× |"
        for label, binary, isa in variants:
            other = statistics.median(r["variants"][label])
            same = baseline(label, binary, isa)
            versus = statistics.median(r["variants"][same]) if same else opal_ms
            row += f" {other:.1f} | {other / versus:.2f} |"
        print(row)
    geomean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    print()
    print(f"geometric mean of opal/onnxruntime: {geomean:.2f}")


if __name__ == "__main__":
    main()
