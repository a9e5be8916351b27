#!/usr/bin/env bash
# Direct transfer vs MMT vs MMT + RBNet on a larger synthetic pair, on one CUDA GPU with AMP
# (benchmarks/uda_compare.py; README "Domain adaptation"). Usage: bash benchmarks/uda_compare_gpu.sh OUT_DIR
set -euo pipefail
OUT=${1:-logs/uda_gpu}
ROOT=${ROOT:-datasets/uda_gpu}
PY=${PYTHON:-python3}
IDS=${IDS:-100}
mkdir -p "$OUT"
[ -d "$ROOT/synthetic_market" ] || $PY tools/make_synthetic.py --root "$ROOT/synthetic_market" --domain market \
    --train-ids "$IDS" --test-ids 60 --seed 0 --no-progress
[ -d "$ROOT/synthetic_duke" ] || $PY tools/make_synthetic.py --root "$ROOT/synthetic_duke" --domain duke \
    --train-ids "$IDS" --test-ids 60 --seed 1 --no-progress
$PY benchmarks/uda_compare.py --root "$ROOT" --out "$OUT" --arms "${ARMS:-mmt,mmt_rbnet}" --seeds "${SEEDS:-1}" \
    --opts MODEL.DEVICE cuda SOLVER.AMP.ENABLED True DATALOADER.NUM_WORKERS 6 SOLVER.IMS_PER_BATCH 64 \
    UDA.PRETRAIN.MAX_EPOCH "${PRE_EPOCHS:-40}" UDA.PRETRAIN.STEPS "[30]" UDA.PRETRAIN.WARMUP_ITERS 100 \
    SOLVER.MAX_EPOCH "${EPOCHS:-10}" UDA.ITERS_PER_EPOCH "${ITERS:-100}" TEST.EVAL_PERIOD 5 ${EXTRA:-}
