#!/bin/bash
# v2 phase C (see training/README.md): from step 3700, the cosine re-planned to end at step 8000; from step 5300 to end at step 7000 (to finish within the session), two threads
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2 PYTHONPATH=.
exec .venv/bin/python training/train_tiny.py --out training/runs/v2 --init-from models/molmo2-tiny-synthetic \
  --p-video 1 --video-clips 2 --questions 6 --steps 7000 --lr 1e-3 --warmup 300 --eval-every 500 \
  --keep-every 1000 --seed 1234 --threads 2 --resume "$@"
