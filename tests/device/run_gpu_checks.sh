#!/usr/bin/env bash
# Everything the GPU machine can show, in one call, from the repository root:
#   tests/device/run_gpu_checks.sh OUTPUT_DIR
# For a GPU machine without a package index: installs the wheels in .devkit (pycuda and its
# dependencies, polygraphy, graphsurgeon) and .whl (cuda-bindings, pytest) and TensorRT-RTX
# (.devkit/rtx: its cp312 bindings wheel and Python package; its libraries wheel joined from
# /tmp/parts, copied there beforehand).
# Then, with each CUDA binding: make doctor, the runtime's real-GPU tests and the contract tests on
# the GPU; then the GPT-SoVITS drop-in check and the streaming time-to-first-audio measurement.
set -uo pipefail
out=${1:?usage: run_gpu_checks.sh OUTPUT_DIR}
site=/tmp/site
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target "$site" .devkit/*.whl .whl/*.whl
if ls /tmp/parts/part* >/dev/null 2>&1; then
  cat /tmp/parts/part* > /tmp/tensorrt_rtx_cu13_libs-1.7.1.116-py3-none-manylinux_2_28_x86_64.whl
  python3 -m pip install -q --no-index --no-deps --target "$site" /tmp/tensorrt_rtx_cu13_libs-*.whl .devkit/rtx/*.whl
  rm -rf "$site/tensorrt_rtx" && cp -r .devkit/rtx/tensorrt_rtx_pkg "$site/tensorrt_rtx"
fi
export PYTHONPATH=$site:$PWD PYTHONUNBUFFERED=1
{
  echo "# tests/device/run_gpu_checks.sh, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, numpy, torch; print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| torch', torch.__version__, 'CUDA', torch.version.cuda)"
  python3 -c "import tensorrt_rtx as t; print('tensorrt_rtx', t.__version__)" 2>&1 | tail -1
  python3 -c "import pycuda, cuda.bindings as b; print('pycuda', pycuda.VERSION_TEXT, '| cuda-bindings', b.__version__)" 2>&1 | tail -1
} | tee "$out/environment.txt"
for binding in pycuda cuda-bindings; do
  echo "## make doctor with GSV_CUDA_BINDING=$binding"
  GSV_CUDA_BINDING=$binding python3 -m build doctor 2>&1
done | tee "$out/doctor.txt"
python3 -m pytest tests/test_runtime_gpu.py tests/test_trt_contract.py -m gpu -v -s -rs -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt"
python3 tests/device/serving_gpu_check.py 2>&1 | tee "$out/serving.txt"
python3 tests/device/stream_timing.py --output "$out/stream_timing.json" 2>&1 | tee "$out/stream-timing.txt"
