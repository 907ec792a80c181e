#!/bin/sh
# ResNet-20 on Fashion-MNIST: rewinding to k=100 vs resetting to k=0 at SGD 0.1 without warm-up (where
# the paper finds no ticket at k=0), shortened to 1,000 iterations with LR x0.1 at 500 and 750,
# crop+flip, global pruning 20% per level, levels 0-4 (41%). Run from the repository root; rerunning resumes.
for k in 100 0; do
  ${PYTHON:-.venv/bin/python} -m lth run --preset resnet20-cifar10-lr0.1 --set name=resnet20-fashion-k$k \
    --set data.dataset=fashion-mnist --data-dir ${DATA:-../shared/datasets} --iterations 1000 --eval-every 100 \
    --set "train.lr_milestones=[500, 750]" --levels 4 --trials 1 --branches ticket --rewind-iteration $k \
    --test-eval best --threads ${THREADS:-2} --out ${OUT_ROOT:-bench_out} "$@" || exit $?
done
