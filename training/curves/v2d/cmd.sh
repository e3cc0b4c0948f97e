#!/bin/bash
# v2 phase D (exploratory, from the finished v2 run's step 7000): twice the share of questions about an absent or
# hidden label (0.4), a new warmup + cosine from step 7000 to 9000 at a lower peak lr (3e-4), two threads
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2 PYTHONPATH=.
exec .venv/bin/python training/train_tiny.py --out training/runs/v2d --init-from models/molmo2-tiny-synthetic \
  --p-video 1 --video-clips 2 --questions 6 --p-none-video 0.4 --steps 9000 --phase-start 7000 --lr 3e-4 \
  --warmup 50 --eval-every 500 --keep-every 1000 --seed 1234 --threads 2 --resume "$@"
