#!/usr/bin/env bash
# GPU evidence in one command: training throughput (eager and compiled), DDP overhead, the Multi30K
# recipe for a few minutes, decoding speed; one JSON file and a markdown table under --out.
# mtrain runs from this working tree on the machine's own torch (no install; nothing downloaded).
#   bash scripts/gpu_check.sh [--out DIR] [--budget-minutes 9] [--train-minutes 2.5] [--data DIR]
#   bash scripts/gpu_check.sh --dry-run --out /tmp/gpu-dry   # every stage on the CPU, tiny, in about a minute
# Python: $PYTHON, else python3. See scripts/gpu_check.py for the stages.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
