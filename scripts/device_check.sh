#!/usr/bin/env bash
# Device check (scripts/device_check.py): throughput, peak memory and MFU of each variant,
# one zero-shot task scored, a 2-step FSDP2 run saved and resumed through
# torch.distributed.checkpoint. 340m in bf16 on a CUDA machine, tiny in float32 on CPU.
#   bash scripts/device_check.sh [--preset 340m] [--steps 20] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PY" scripts/device_check.py "$@"
