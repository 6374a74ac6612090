#!/usr/bin/env bash
# The GPU measurements of docs/scaling.md: throughput of (a) plain PyTorch, (b) RealUIDModule fp32, (c0) RealUIDModule
# bf16 + channels_last, (c) the same + compile on the paper's CIFAR-10 UNet (35.7M) at batch 256, the fp32-vs-bf16
# loss agreement, T(B) and the DDP model. The device image has torch, lightning and torchmetrics but not diffusers.
# On an H200 all of it takes about 8 minutes, 6 of them compiling (c); EXTRA="--settings c0 c" (7 min) and
# EXTRA="--settings a b" (1 min) split it into two device calls.
#
#   here:   bash benchmarks/gpu_check.sh fetch     # diffusers + importlib_metadata wheels for Python 3.12 → .whl/ (6.4 MB)
#   device: bash benchmarks/gpu_check.sh run       # run tool, carry [".whl"], timeout_s 600; report under $OUT
#   then:   copy $OUT/throughput_gpu.{txt,json,log} to benchmarks/results/ and the table into the README
#
# Environment: PYTHON (default python3), DEVICE (cuda), BATCH (256), OUT (benchmarks/results), EXTRA (more arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  fetch)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
      diffusers==0.42.1 importlib_metadata==10.2.0
    ls -la .whl ;;
  run)
    py=${PYTHON:-python3}
    site=""
    if compgen -G ".whl/*.whl" >/dev/null; then
      "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/realuid_site .whl/*.whl
      site=/tmp/realuid_site
    fi
    export PYTHONPATH="src${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    out=${OUT:-benchmarks/results}
    mkdir -p "$out"
    "$py" -c "import torch, lightning, diffusers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'diffusers', \
diffusers.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$out/throughput_gpu.log"
    # shellcheck disable=SC2086
    "$py" benchmarks/throughput.py --device "${DEVICE:-cuda}" --batch "${BATCH:-256}" --out "$out/throughput_gpu.txt" ${EXTRA:-} \
      2>&1 | tee -a "$out/throughput_gpu.log" ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh fetch|run" >&2; exit 2 ;;
esac
