#!/bin/sh
# LeNet-300-100 on MNIST: ticket vs finetune vs lr_rewind (Renda et al. 2020; docs/RESULTS.md), 6,000
# iterations with LR x0.1 at 3,000 and 4,500 (Adam's constant rate would make finetune = lr_rewind),
# 2 trials, levels 0-9 (13.5%). Run from the repository root; rerunning resumes.
exec ${PYTHON:-.venv/bin/python} -m lth run --preset lenet300-mnist --set name=lenet300-mnist-finetune \
  --data-dir ${DATA:-../shared/datasets} --iterations 6000 --eval-every 100 \
  --set "train.lr_milestones=[3000, 4500]" --levels 9 --trials 2 --branches ticket,finetune,lr_rewind \
  --test-eval best --threads ${THREADS:-1} --out ${OUT_ROOT:-bench_out} "$@"
