#!/bin/sh
# Conv-2 on Fashion-MNIST, ticket vs reinit vs random_mask (docs/RESULTS.md): the conv2-cifar10 preset's
# rates and optimizer, shortened to 2,000 iterations, bf16 products, 2 trials, levels 0-8 (16.8%).
# Run from the repository root; rerunning resumes. Extra flags are passed on (e.g. --dry-run).
exec ${PYTHON:-.venv/bin/python} -m lth run --preset conv2-cifar10 --set name=conv2-fashion \
  --set data.dataset=fashion-mnist --data-dir ${DATA:-../shared/datasets} --iterations 2000 --eval-every 100 \
  --levels 8 --trials 2 --branches ticket,reinit,random_mask --precision bf16 --test-eval best \
  --parallel-units 1 --threads ${THREADS:-2} --out ${OUT_ROOT:-bench_out} "$@"
