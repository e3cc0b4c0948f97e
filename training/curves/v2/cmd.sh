#!/bin/bash
# v2 phase B (see training/README.md): from step 1000, six questions per clip
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1 PYTHONPATH=.
exec .venv/bin/python training/train_tiny.py --out training/runs/v2 --init-from models/molmo2-tiny-synthetic \
  --p-video 1 --video-clips 2 --questions 6 --steps 10000 --lr 1e-3 --warmup 300 --eval-every 500 \
  --keep-every 1000 --seed 1234 --resume "$@"
