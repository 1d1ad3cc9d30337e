#!/usr/bin/env bash
# Fetches the real model the default deployment runs: PaddleOCR's text direction classifier
# (ch_ppocr_mobile_v2.0_cls, 585 KB, Apache-2.0), taken from the rapidocr-onnxruntime 1.4.4
# wheel on PyPI, to models/ppocr_cls.onnx. Does nothing if it is already there.
set -euo pipefail
cd "$(dirname "$0")"
[ -f ppocr_cls.onnx ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps rapidocr-onnxruntime==1.4.4 -d "$tmp"
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
data = wheel.read("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
with open("ppocr_cls.onnx.partial", "wb") as f:
    f.write(data)
PY
mv ppocr_cls.onnx.partial ppocr_cls.onnx
echo "fetched models/ppocr_cls.onnx"
