"""When the engines switch kernels and layouts: one dataclass, passed in.

Each threshold is a crossover measured on 2 CPU cores with LeNet-300-100 units (the measurements
and their commands are in docs/PERFORMANCE.md). A different machine or network may move them;
pass another :class:`EnginePolicy` to the training loop rather than editing code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EnginePolicy:
    # Optimise a layer's surviving weights compactly (gathered values) below this density: the
    # gather/scatter then costs less than masking gradients plus the dense optimizer update.
    compact_below: float = 0.25
    # Large compact float32 layers below these densities use sparse kernels: the forward product as
    # one block-diagonal CSR matrix over all units, evaluation as one stacked CSR product.
    sparse_forward_below: float = 0.25
    sparse_eval_below: float = 0.25
    # The weight gradient at the surviving weights only (batched SDDMM) wins below this density for
    # several units; between it and 25% a dense batched product gathered at the survivors runs at
    # the GEMM peak and is faster. One unit alone keeps the SDDMM up to its own threshold.
    sparse_grad_below: float = 0.10
    sparse_grad_below_one_unit: float = 0.25
    # Smaller layers stay dense: their products are cheap and overhead-bound.
    sparse_min_weights: int = 50_000
    # Evaluation chunk sizes: a CSR product reads a row of the transposed input per surviving
    # weight, and 512 images keep those rows in cache; dense, 1,000 images keep the [N, M, hidden]
    # activations small.
    sparse_eval_chunk: int = 512
    dense_eval_chunk: int = 1000
    # Convolutional models train and evaluate in channels-last memory layout: oneDNN's NHWC
    # kernels ran Conv-2's 64->64 convolution at twice the speed of NCHW, and its max-pooling ten
    # times as fast (docs/PERFORMANCE.md, "Convolutional networks").
    channels_last: bool = True
    # Units of a convolutional model train one at a time on the CPU: vmap turns N units'
    # convolutions into one grouped convolution, which oneDNN ran slower per unit than N separate
    # ones (benchmarks/conv_speed.py). On a GPU they train together: 8 vmapped Conv-2 units ran
    # 1.7x the plain loop's aggregate throughput on an H100 in IEEE fp32, 3.7-4.5x with TF32
    # convolutions (docs/PERFORMANCE.md, "GPU").
    batch_convolutions_on_cpu: bool = False
    # Convolutional models evaluate 100 images at a time on the CPU: Conv-2's 64-channel 28x28
    # activations of 100 images stay in cache, and its evaluation ran 1.3x (fp32) and 2.2x (bf16)
    # faster than in chunks of 1,000 (docs/PERFORMANCE.md, "Convolutional networks").
    conv_eval_chunk: int = 100
    # On a GPU there is no cache to fit: in chunks of 100, Conv-2's evaluation on an H100 waited
    # on kernel launches and ran 3.8x slower than a plain forward of 1,000 (docs/PERFORMANCE.md,
    # "GPU"). 1,000 images per unit per chunk keep a vmapped group's activations to a few GB.
    conv_eval_chunk_gpu: int = 1000

    def __post_init__(self) -> None:
        for name in ("compact_below", "sparse_forward_below", "sparse_eval_below", "sparse_grad_below",
                     "sparse_grad_below_one_unit"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"EnginePolicy.{name} = {v!r}: must be a density in [0, 1]")
        for name in ("channels_last", "batch_convolutions_on_cpu"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EnginePolicy.{name} = {getattr(self, name)!r}: must be True or False")
        for name in ("sparse_min_weights", "sparse_eval_chunk", "dense_eval_chunk", "conv_eval_chunk",
                     "conv_eval_chunk_gpu"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"EnginePolicy.{name} = {v!r}: must be a positive integer")

    def conv_eval_chunk_on(self, device: str | torch.device) -> int:
        """The most images a convolutional model evaluates at once on ``device``:
        :attr:`conv_eval_chunk` on the CPU, :attr:`conv_eval_chunk_gpu` elsewhere."""
        return self.conv_eval_chunk if torch.device(device).type == "cpu" else self.conv_eval_chunk_gpu


#: Every kernel dense (no compact storage, no sparse products): the reference arm of the A/Bs.
DENSE_ONLY = EnginePolicy(compact_below=0.0, sparse_forward_below=0.0, sparse_eval_below=0.0,
                          sparse_grad_below=0.0, sparse_grad_below_one_unit=0.0)
