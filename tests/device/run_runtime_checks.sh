#!/usr/bin/env bash
# The runtime's GPU checks (tests/test_runtime_gpu.py) on the GPU machine, from the repository root:
#   tests/device/run_runtime_checks.sh OUTPUT_FILE
# Installs the device kit (.devkit: pycuda and its dependencies, pytest) into /tmp/site. TensorRT-RTX
# comes as .devkit/rtx (bindings wheel for cp312, the tensorrt_rtx package, the parser library) plus
# its 234 MB core library, xz-compressed (65 MB, over one call's 64 MiB) and split into .part0/ and
# .part1/: one call parks .part0 in /tmp/parked, the next (within 30 s) moves both into /tmp/parts.
# Without /tmp/parts the TensorRT-RTX test skips with its reason.
# A plan built elsewhere can be named with RUNTIME_RTX_PLAN (default: .devkit/tiny/tiny.plan).
set -uo pipefail
out=${1:?usage: run_runtime_checks.sh OUTPUT_FILE}
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --target "$site" .devkit/*.whl .devkit/pytest/*.whl
if ls /tmp/parts/librtx.xz.part* >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target "$site" .devkit/rtx/*.whl
  rm -rf "$site/tensorrt_rtx" && cp -r .devkit/rtx/tensorrt_rtx_pkg "$site/tensorrt_rtx"
  mkdir -p "$site/tensorrt_rtx_libs" && cp .devkit/rtx/libs/* "$site/tensorrt_rtx_libs/"
  cat /tmp/parts/librtx.xz.part* | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open(sys.argv[1], 'wb'))" \
    "$site/tensorrt_rtx_libs/libtensorrt_rtx.so.1"
fi
export PYTHONPATH=$site:$PWD
if [ -z "${RUNTIME_RTX_PLAN:-}" ] && [ -f .devkit/tiny/tiny.plan ]; then export RUNTIME_RTX_PLAN=$PWD/.devkit/tiny/tiny.plan; fi
mkdir -p "$(dirname "$out")"
{
  echo "# tests/device/run_runtime_checks.sh, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, numpy, torch; print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| torch', torch.__version__, 'CUDA', torch.version.cuda)"
  python3 -c "import tensorrt_rtx as t; print('tensorrt_rtx', t.__version__)" 2>&1 | tail -1
  python3 -m pytest tests/test_runtime_gpu.py -v -s -rs -p no:cacheprovider 2>&1
} | tee "$out"
