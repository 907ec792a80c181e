#!/bin/sh
# LeNet-300-100 on MNIST with the paper's full protocol (docs/RESULTS.md): 5 trials, 50,000
# iterations, levels 0-16, ticket/reinit/random_mask; the run directory lenet300-mnist-fc00979ad0
# that benchmarks/lenet_mnist.py makes too. Then its report (figures, tables, report.html).
# Run from the repository root; rerunning resumes. Extra flags go to lth run.
${PYTHON:-.venv/bin/python} -m lth run --preset lenet300-mnist --data-dir ${DATA:-../shared/datasets} \
  --trials 5 --levels 16 --branches ticket,reinit,random_mask --test-eval best --threads ${THREADS:-2} \
  --out ${OUT_ROOT:-bench_out} "$@" || exit $?
exec ${PYTHON:-.venv/bin/python} -m lth report ${OUT_ROOT:-bench_out}/lenet300-mnist-fc00979ad0
