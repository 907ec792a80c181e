"""N networks of one architecture as one computation: the engines behind :mod:`lth.batched`.

An engine holds N units' weights stacked along a new leading dimension and the tensors an ordinary
optimizer steps (Adam and SGD are elementwise, so one optimizer over stacked tensors is N
independent optimizers). It offers:

* ``loss_and_grad(x, y)``: per-unit mean cross-entropy on per-unit batches ``x[N, B, ...]``, with the
  gradients of :attr:`Engine.opt_params` set (pruned weights get exactly zero gradient);
* ``after_step()``: bring the weights up to date after the optimizer stepped;
* ``logits(x, units=...)``: per-unit outputs ``[N, M, classes]`` for one shared batch (evaluation),
  of every unit or of a chosen few.

:class:`MLPEngine` is hand-written for fully connected ReLU networks (LeNet-300-100): batched
matrix products forward, an explicit backward pass (no autograd graph, no per-unit Python work, no
gradient w.r.t. the data), and batched evaluation (the first layer of every unit as one wide GEMM,
whose output columns do not depend on the width, so a unit's numbers do not depend on its group).
When every unit keeps the same number of weights per layer (all units of an IMP level do: ticket,
reinit and random mask have the same per-layer counts), the optimizer steps only the surviving
weights, held compactly: Adam's memory-bound update and the gradient masking then cost in
proportion to the density, not to the dense size. :class:`VmapEngine` handles any other model
without BatchNorm or dropout through ``torch.func.vmap`` and autograd.

Precision ``"bf16"`` runs the matrix products in bfloat16 (AMX/AVX512-BF16 on recent CPUs, tensor
cores on GPUs) while weights, optimizer state, loss and softmax stay float32.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .models import MLP
from .pruning import Mask
from .train import autocast

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Optimise a layer's surviving weights compactly below this density. Measured on 2 CPU cores for
# 15 LeNet-300-100 units: gathering gradients and scattering weights costs about as much as
# masking gradients plus the dense Adam update at ~21% density, and less below.
COMPACT_BELOW = 0.25
# Sparse kernels for large compact layers in float32 (LeNet-300-100's 784x300 layer, batch 60, 2 CPU
# cores): the forward product as one block-diagonal CSR matrix over all units, the weight gradient
# at the surviving weights only (batched SDDMM, written in place), and evaluation as one stacked
# CSR product in 512-image chunks. The interleaved A/B (benchmarks/sparse_step_ab.py, session 7,
# docs/PERFORMANCE.md) against the dense path: 15 units 0.520 vs 0.557 ms per network-iteration at
# 21%, 0.362 vs 0.494 at 10.7%, 0.249 vs 0.454 at 2.8%; one unit 0.944 vs 1.013 at 21%; at 33% the
# sparse step loses (0.726 vs 0.681). Evaluating 5,000 images with 15 units: 140 vs 200 ms at 21%,
# 52 vs 196 at 2.8%. (Session 4's per-unit CSR calls only won below ~5%: per-call overhead, not
# arithmetic, is what a very sparse layer costs.) So every compact large layer takes them. Session 8
# made the dense path's gradient masking in place; rerun at 15 units, the dense path then wins at
# 26.2% too (0.601 vs 0.618) and at 32.8% (0.602 vs 0.706), so the thresholds stay at 25%.
# Smaller layers stay dense: their products are cheap and overhead-bound.
# Session 9 timed a mixed arm too: the CSR forward, with the weight gradient as one dense batched
# product gathered at the surviving weights. On real figure levels (benchmarks/level_step.py
# --ab-gradient, 15 units, ms a step) it beats the SDDMM down to ~11%: 7.1 vs 8.6-9.0 at 21%,
# 6.2-6.3 vs 7.1-7.4 at 16.8%, 6.2 vs 6.3-6.5 at 13.4%, a tie at 10.7%, and loses at 8.6% (5.5 vs
# 5.2). torch's SDDMM takes the units one after another at ~8 ns a surviving weight per core; the
# dense product runs at the GEMM peak. Three units gain too (1.7 vs 1.9 at 16.8%), but one unit
# alone does not (0.90 vs 0.91 at 21%, 0.83 vs 0.79 at 13.4%), so it keeps the SDDMM from 25%.
# Through the whole loop (train_many, evaluations included) the gain is smaller: 10.2 vs 10.7-11.5
# ms an iteration at 16.8%, 8.7-8.9 vs 8.8-9.1 at 13.4%.
SPARSE_FORWARD_BELOW = 0.25
SPARSE_GRAD_BELOW = 0.10
SPARSE_GRAD_BELOW_ONE_UNIT = 0.25
SPARSE_EVAL_BELOW = 0.25
SPARSE_EVAL_CHUNK = 512
DENSE_EVAL_CHUNK = 1000
SPARSE_MIN_WEIGHTS = 50_000


def supports_batching(model: nn.Module) -> bool:
    """Vectorisable: no normalisation layers with running statistics and no active dropout."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.Dropout) and m.p > 0:
            return False
    return True


def _stack(states: Sequence[dict[str, torch.Tensor]], names: list[str], device) -> dict[str, torch.Tensor]:
    return {n: torch.stack([s[n] for s in states]).to(device) for n in names}


class Engine:
    """Stacked weights (``params``, in the template's ``named_parameters`` order), buffers, masks."""

    def __init__(self, template: nn.Module, states: Sequence[dict[str, torch.Tensor]],
                 masks: Sequence[Mask], device, precision: str = "fp32"):
        if len(states) != len(masks) or not states:
            raise ValueError(f"need one mask per unit, got {len(states)} states and {len(masks)} masks")
        if precision not in _DTYPES:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(_DTYPES)}")
        self.template = template.to(device)
        self.device = torch.device(device)
        self.precision = precision
        self.compute_dtype = _DTYPES[precision]
        self.n_units = len(states)
        self.param_names = [k for k, _ in template.named_parameters()]
        self.buffer_names = [k for k, _ in template.named_buffers()]
        self.params = _stack(states, self.param_names, device)
        self.buffers = _stack(states, self.buffer_names, device) if self.buffer_names else {}
        self.mask_names = [k for k in self.param_names if k in masks[0]]
        extra = set(masks[0]) - set(self.param_names)
        if extra:
            raise KeyError(f"mask names parameters the model does not have: {sorted(extra)}")
        self.masks = {k: torch.stack([m[k] for m in masks]).to(device, self.params[k].dtype)
                      for k in self.mask_names}
        with torch.no_grad():
            for k in self.mask_names:
                self.params[k].mul_(self.masks[k])  # pruned weights are exactly zero
        # name -> flat indices [N, nnz] of the surviving weights, for compactly optimised tensors
        self.compact: dict[str, torch.Tensor] = {}
        self.opt_params: list[torch.Tensor] = []

    # ------------------------------------------------------------------ weights
    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        """Unit ``i``'s weights as an ordinary state dict (a copy)."""
        state = {k: self.params[k][i].detach().clone() for k in self.param_names}
        state.update({k: self.buffers[k][i].clone() for k in self.buffer_names})
        return state

    def after_step(self) -> None:
        pass

    # ------------------------------------------------------------------ optimizer state
    def unit_optimizer_state(self, stacked: dict[str, Any], i: int) -> dict[str, Any]:
        """Unit ``i``'s slice of the stacked optimizer's ``state_dict``, in the layout a plain
        ``torch.optim`` optimizer over the unit's ``model.parameters()`` uses (so a checkpoint
        written here resumes in :func:`lth.train.train` and the other way round)."""
        state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(self.param_names):
            entry = stacked["state"].get(j)
            if entry is None:
                continue
            shape = self.params[name].shape
            out: dict[str, Any] = {}
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.n_units:
                    v = value[i]
                    if name in self.compact:
                        dense = torch.zeros(shape[1:].numel(), dtype=v.dtype, device=v.device)
                        v = dense.scatter_(0, self.compact[name][i], v).view(shape[1:])
                    out[key] = v.detach().cpu().clone()
                else:
                    out[key] = value.clone() if isinstance(value, torch.Tensor) else value
            state[j] = out
        groups = [{**g, "params": list(range(len(self.param_names)))} for g in stacked["param_groups"]]
        return {"state": state, "param_groups": groups}

    def stacked_optimizer_state(self, units: Sequence[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`unit_optimizer_state`: per-unit states -> one stacked state_dict
        (``template`` is the fresh stacked optimizer's own ``state_dict()``)."""
        state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(self.param_names):
            entries = [u["state"].get(j) for u in units]
            if all(e is None for e in entries):
                continue
            if any(e is None for e in entries):
                raise ValueError(f"optimizer state of {name} is missing for some units")
            out: dict[str, Any] = {}
            for key in entries[0]:
                vals = [e[key] for e in entries]
                if isinstance(vals[0], torch.Tensor) and vals[0].dim() > 0:
                    stacked = torch.stack([v.to(self.device) for v in vals])
                    if name in self.compact:
                        stacked = stacked.flatten(1).gather(1, self.compact[name])
                    out[key] = stacked
                else:
                    out[key] = vals[0]
            state[j] = out
        groups = [{**g, **{k: v for k, v in units[0]["param_groups"][gi].items() if k != "params"}}
                  for gi, g in enumerate(template["param_groups"])]
        return {"state": state, "param_groups": groups}

    # ------------------------------------------------------------------ computation
    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    #: Whether :meth:`logits` wants ``xt``, the evaluation input transposed to [features, M] (a
    #: sparse first layer multiplies it); callers make it once per split, since splits are fixed.
    wants_transposed_eval_input = False
    #: The most images :meth:`logits` should get at once (None: no limit).
    eval_chunk_limit: int | None = None

    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        """Outputs ``[len(units), M, classes]`` of the listed units (all units when ``None``)."""
        raise NotImplementedError

    def _unit_index(self, units: Sequence[int] | None) -> torch.Tensor | None:
        if units is None:
            return None
        bad = [u for u in units if not 0 <= u < self.n_units]
        if bad or not units:
            raise ValueError(f"units {list(units)}: need unit indices in 0..{self.n_units - 1}")
        return torch.tensor(list(units), dtype=torch.long, device=self.device)


class VmapEngine(Engine):
    """Any batchable model: ``functional_call`` under ``vmap``, gradients from autograd."""

    def __init__(self, template, states, masks, device, precision="fp32"):
        super().__init__(template, states, masks, device, precision)
        if not supports_batching(template):
            raise ValueError(f"{type(template).__name__} has BatchNorm or dropout; "
                             "train its units one at a time")
        for p in self.params.values():
            p.requires_grad_(True)
        self.opt_params = [self.params[k] for k in self.param_names]
        buffers = self.buffers

        def fn(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, ({**p, **buffers} if buffers else p), (x,))

        self._train_forward = vmap(fn, in_dims=(0, 0))
        self._eval_forward = vmap(fn, in_dims=(0, None))
        self._mask_pairs = ([self.params[k] for k in self.mask_names], [self.masks[k] for k in self.mask_names])

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.n_units
        with autocast(self.device, self.precision):
            out = self._train_forward(self.params, x)  # [N, B, classes]
        per_unit = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(1)
        for p in self.opt_params:
            p.grad = None
        # The sum of the units' losses: each unit's gradient is its own loss's gradient.
        per_unit.sum().backward()
        params, masks = self._mask_pairs
        if params:
            torch._foreach_mul_([p.grad for p in params], masks)
        return per_unit.detach()

    @torch.no_grad()
    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        sel = self._unit_index(units)
        params = {k: v.detach() if sel is None else v.detach().index_select(0, sel)
                  for k, v in self.params.items()}
        if sel is None:
            forward = self._eval_forward
        else:  # the buffers of just these units
            buffers = {k: v.index_select(0, sel) for k, v in self.buffers.items()}
            template = self.template

            def fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
                return functional_call(template, ({**p, **b} if b else p), (xx,))

            forward = lambda p, xx: vmap(fn, in_dims=(0, 0, None))(p, buffers, xx)  # noqa: E731
        with autocast(self.device, self.precision):
            return forward(params, x).float()


class MLPEngine(Engine):
    """Fully connected ReLU stacks (:class:`lth.models.MLP`) with an explicit backward pass.

    Per layer, the cheapest correct gradient path is chosen once: unpruned layers (no mask, or
    every unit's mask full, as at IMP level 0) take the weight gradient straight from the batched
    product; masked dense layers multiply it by the mask; compact layers gather the surviving
    entries. In bf16 the weights are kept as bf16 copies updated in place (compact layers scatter
    only their surviving values), and the float32 weights of compact layers are brought up to
    date lazily, when a unit's state or an evaluation needs them.
    """

    def __init__(self, template, states, masks, device, precision="fp32"):
        super().__init__(template, states, masks, device, precision)
        if type(template) is not MLP:
            raise ValueError(f"MLPEngine needs an lth.models.MLP, got {type(template).__name__}")
        n = self.n_units
        layers = [f"hidden.{i}" for i in range(len(template.hidden))] + ["out"]
        self.weights = [self.params[f"{ln}.weight"] for ln in layers]  # [N, out, in]
        self.biases = [self.params[f"{ln}.bias"] for ln in layers]  # [N, out]
        self._wname = [f"{ln}.weight" for ln in layers]
        for k in self.mask_names:
            counts = self.masks[k].flatten(1).sum(1)
            if bool((counts == counts[0]).all()) and int(counts[0]) < COMPACT_BELOW * self.masks[k][0].numel():
                nnz = int(counts[0])
                idx = self.masks[k].flatten(1).nonzero()[:, 1].view(n, nnz)  # sorted per unit
                self.compact[k] = idx
        # masks that prune nothing in any unit need no gradient masking
        self._unmasked = {k for k in self._wname
                          if k not in self.compact and (k not in self.masks or bool(self.masks[k].all()))}
        self._values: dict[str, torch.Tensor] = {}
        for k in self.param_names:
            if k in self.compact:
                v = self.params[k].flatten(1).gather(1, self.compact[k])
            else:
                v = self.params[k]
            v.grad = torch.zeros_like(v)
            self._values[k] = v
        self.opt_params = [self._values[k] for k in self.param_names]
        self._lowp = self.compute_dtype != torch.float32
        # CSR tensors over the compact values of large, very sparse layers in float32. They alias
        # the values (and the gradient), so the optimizer's in-place update is seen without a copy,
        # and each covers every unit at once: one sparse call per layer and step, not one per unit
        # (per-call overhead, not arithmetic, is what a very sparse layer costs).
        self._csr_index: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per unit crow, col
        self._block: dict[str, torch.Tensor] = {}  # block-diagonal [N*out, N*in]: training forward
        self._stacked: dict[str, torch.Tensor] = {}  # units stacked [N*out, in]: evaluation
        self._sddmm: dict[str, torch.Tensor] = {}  # batched [N, out, in] over the gradient values
        self._sparse_fwd: set[str] = set()
        self.sparse_eval: set[str] = set()
        if not self._lowp:
            for name in self._wname:
                if name not in self.compact or self.params[name][0].numel() < SPARSE_MIN_WEIGHTS:
                    continue
                dens = self.compact[name].shape[1] / self.params[name][0].numel()
                if dens < SPARSE_FORWARD_BELOW:
                    self._block[name] = self._csr(name, "block", self._values[name])
                    self._sparse_fwd.add(name)
                if dens < (SPARSE_GRAD_BELOW_ONE_UNIT if n == 1 else SPARSE_GRAD_BELOW):
                    self._sddmm[name] = self._csr(name, "batched", self._values[name].grad)
                if dens < SPARSE_EVAL_BELOW:
                    self._stacked[name] = self._csr(name, "stacked", self._values[name])
                    self.sparse_eval.add(name)
        # compact layers whose dense float32 weights are brought up to date only when read (by
        # unit_state or evaluation): all of them in bf16 (the products use bf16 copies), and in
        # float32 a first layer with a sparse forward (no input gradient needs its dense weights)
        self._lazy = (set(self.compact) if self._lowp
                      else {k for k in self._sparse_fwd if k == self._wname[0]})
        self._stale = False
        # dense weight-gradient buffers in the compute dtype, for the products whose result is not
        # the gradient itself: every layer in bf16 (the gradient is float32), compact layers (the
        # product is then gathered), except where SDDMM computes only the surviving entries. A
        # float32 dense layer, masked or not, has its product written into the gradient.
        self._wgrad = {k: torch.empty_like(self.params[k], dtype=self.compute_dtype) for k in self._wname
                       if k not in self._sddmm and (self._lowp or k in self.compact)}
        if self._lowp:
            self._cw = [w.to(self.compute_dtype) for w in self.weights]
            self._cb = [b.to(self.compute_dtype) for b in self.biases]
        else:
            self._cw, self._cb = self.weights, self.biases

    def _gather(self, name: str, dense: torch.Tensor, out: torch.Tensor) -> None:
        """``out[i] = dense[i].flatten()[compact[name][i]]`` for every unit. One unit takes a flat
        index_select (29 vs 38 us for LeNet's first layer at 21%); several take one gather along the
        unit rows, which uses both cores (452 vs 797 us for 15 units)."""
        if self.n_units == 1:
            torch.index_select(dense.view(-1), 0, self.compact[name].view(-1), out=out.view(-1))
        else:
            torch.gather(dense.view(self.n_units, -1), 1, self.compact[name], out=out)

    def _scatter(self, name: str, dense: torch.Tensor, values: torch.Tensor) -> None:
        """``dense[i].flatten()[compact[name][i]] = values[i]`` for every unit (the layout choice
        of :meth:`_gather`)."""
        if self.n_units == 1:
            dense.view(-1).index_copy_(0, self.compact[name].view(-1), values.view(-1))
        else:
            dense.view(self.n_units, -1).scatter_(1, self.compact[name], values)

    def _csr(self, name: str, layout: str, values: torch.Tensor, units: torch.Tensor | None = None) -> torch.Tensor:
        """A CSR tensor of the surviving weights of layer ``name`` of every unit (or of the units
        listed in ``units``) whose values alias ``values`` ([units, nnz], in the compact order,
        which is CSR order). ``layout``:

        * ``"batched"``: [N, out, in], one matrix per unit (what the batched SDDMM kernel takes);
        * ``"block"``: the units' matrices on the diagonal of one [N*out, N*in] matrix, so one
          product multiplies each unit's weights with its own inputs stacked as [N*in, B];
        * ``"stacked"``: the units' matrices one above the other, [N*out, in], so one product
          multiplies every unit's weights with one shared input (evaluation).
        """
        out_f, in_f = self.params[name].shape[1:]
        if name not in self._csr_index:
            idx = self.compact[name]
            rows = idx // in_f
            bounds = torch.arange(out_f + 1, device=idx.device)
            crow = torch.stack([torch.searchsorted(rows[i], bounds) for i in range(self.n_units)])
            # int32 indices: MKL's 32-bit kernels (64-bit ones are ~5% slower, lth.sparse)
            self._csr_index[name] = (crow.to(torch.int32), (idx % in_f).to(torch.int32))
        crow, col = self._csr_index[name]
        if units is not None:
            crow, col = crow.index_select(0, units), col.index_select(0, units)
        n, nnz = col.shape
        unit = torch.arange(n, dtype=torch.int32, device=col.device).unsqueeze(1)
        if layout == "batched":
            crow_, col_, shape = crow, col, (n, out_f, in_f)
        else:
            crow_ = torch.cat([crow[:1, :1], (crow[:, 1:] + unit * nnz).reshape(1, -1)], 1).view(-1)
            if layout == "block":
                col_, shape = (col + unit * in_f).view(-1), (n * out_f, n * in_f)
            else:
                col_, shape = col.reshape(-1), (n * out_f, in_f)
        with warnings.catch_warnings():  # "CSR support is in beta": we test what we use
            warnings.simplefilter("ignore", UserWarning)
            t = torch.sparse_csr_tensor(crow_, col_, values if layout == "batched" else values.view(-1),
                                        shape, check_invariants=False)
        assert t.values().data_ptr() == values.data_ptr(), "the CSR tensor must alias the values"
        return t

    @property
    def wants_transposed_eval_input(self) -> bool:  # type: ignore[override]
        return self._wname[0] in self.sparse_eval

    @property
    def eval_chunk_limit(self) -> int | None:  # type: ignore[override]
        # A CSR product reads a row of the transposed input per surviving weight; 512 images keep
        # those rows (784 x 512 floats) in cache: 2x faster than 5,000 at once. Dense, 1,000 images
        # keep the [N, M, 300] activations small: 15 real level-2 LeNets evaluate the 5,000-image
        # validation split in 199 ms instead of 284 in one chunk (docs/PERFORMANCE.md).
        return SPARSE_EVAL_CHUNK if self._wname[0] in self.sparse_eval else DENSE_EVAL_CHUNK

    @torch.no_grad()
    def _sync(self) -> None:
        if self._stale:
            for k in self._lazy:
                self._scatter(k, self.params[k], self._values[k])
            self._stale = False

    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        self._sync()
        return super().unit_state(i)

    @torch.no_grad()
    def after_step(self) -> None:
        n = self.n_units
        if not self._lowp:
            for k in self.compact:
                if k not in self._lazy:
                    self._scatter(k, self.params[k], self._values[k])
            self._stale = bool(self._lazy)
            return
        for layer, name in enumerate(self._wname):
            cw = self._cw[layer]
            if name in self.compact:
                # pruned entries of the low-precision copy are zero and stay zero. Scatter the
                # bits as int16: a bf16 scatter_ converts the whole tensor to float32 and back.
                cw.view(n, -1).view(torch.int16).scatter_(
                    1, self.compact[name], self._values[name].to(cw.dtype).view(torch.int16))
            else:
                cw.copy_(self.weights[layer])
            self._cb[layer].copy_(self.biases[layer])
        self._stale = bool(self.compact)

    @torch.no_grad()
    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[0], x.shape[1]
        cw, cb = self._cw, self._cb
        acts = [x.reshape(n, b, -1).to(self.compute_dtype)]
        transposed: dict[int, torch.Tensor] = {}  # layer -> its input as [N, in, B] (sparse layers)
        for layer, (w, bias) in enumerate(zip(cw[:-1], cb[:-1])):
            name = self._wname[layer]
            if name in self._sparse_fwd:
                # all units in one product: block-diagonal weights [N*out, N*in] @ inputs [N*in, B]
                at = transposed[layer] = acts[-1].transpose(1, 2).contiguous()  # [N, in, B]
                h = torch.addmm(bias.reshape(-1, 1), self._block[name], at.view(-1, b))  # [N*out, B]
                acts.append(h.view(n, -1, b).transpose(1, 2).contiguous().relu_())
            else:
                acts.append(torch.baddbmm(bias.unsqueeze(1), acts[-1], w.transpose(1, 2)).relu_())
        out = torch.baddbmm(cb[-1].unsqueeze(1), acts[-1], cw[-1].transpose(1, 2)).float()
        logp = out.log_softmax(-1)  # [N, B, C]
        picked = logp.gather(2, y.unsqueeze(2))  # [N, B, 1]
        loss = picked.squeeze(2).mean(1).neg_()
        # d(mean cross-entropy)/d(logits) = (softmax - onehot) / B
        d = logp.exp_().scatter_add_(2, y.unsqueeze(2), torch.full_like(picked, -1.0)).div_(b)
        d = d.to(self.compute_dtype)
        for layer in range(len(cw) - 1, -1, -1):
            name = self._wname[layer]
            a = acts[layer]
            vg = self._values[name].grad
            if name in self._sddmm:
                # the gradient at the surviving weights only, every unit in one call, written
                # straight into the compact gradient (the CSR tensor aliases it). The kernel takes
                # its second factor transposed: [N, in, B], which the sparse forward made already.
                at = transposed.get(layer)
                at = a.transpose(1, 2).contiguous() if at is None else at
                g = self._sddmm[name]
                torch.sparse.sampled_addmm(g, d.transpose(1, 2), at.transpose(1, 2), beta=0.0, out=g)
            elif name in self.compact:
                g = torch.bmm(d.transpose(1, 2), a, out=self._wgrad[name]).view(n, -1)
                if self._lowp:
                    vg.copy_(g.gather(1, self.compact[name]))
                else:
                    self._gather(name, g, vg)
            elif name in self._unmasked:
                if self._lowp:
                    vg.copy_(torch.bmm(d.transpose(1, 2), a, out=self._wgrad[name]))
                else:
                    torch.bmm(d.transpose(1, 2), a, out=vg)
            elif self._lowp:
                g = torch.bmm(d.transpose(1, 2), a, out=self._wgrad[name])
                torch.mul(g, self.masks[name], out=vg)
            else:
                # in place: a separate product buffer cost ~1 ms a step more on 15 real level-2
                # LeNets (0.25 ms in isolation: the gain is cache; benchmarks/level_step.py)
                torch.bmm(d.transpose(1, 2), a, out=vg).mul_(self.masks[name])
            torch.sum(d, 1, dtype=torch.float32, out=self.biases[layer].grad)
            if layer > 0:
                d = torch.ops.aten.threshold_backward(torch.bmm(d, cw[layer]), a, 0)
        return loss

    @torch.no_grad()
    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        m = x.shape[0]
        sel = self._unit_index(units)
        cw, cb = self._cw, self._cb
        # The first layer of every unit in one product: dense, one wide GEMM [M, in] @ [in, N*out]
        # (each output column is one unit's neuron, summed over the same inputs in the same order
        # whatever the width; 15 real level-2 LeNets validate 5,000 images in 155-157 ms, 190-200
        # unit by unit, benchmarks/level_step.py); sparse, one stacked CSR product (a CSR row holds
        # one unit's weights of one neuron). Either way a unit's numbers do not depend on which
        # other units share its group, bitwise, so a crash-split group resumes exactly
        # (tests/test_batched.py).
        self._sync()
        bias = cb[0] if sel is None else cb[0][sel]
        if self._wname[0] in self.sparse_eval:
            if xt is None:
                xt = x.reshape(m, -1).t().contiguous()
            name = self._wname[0]
            csr = (self._stacked[name] if sel is None else  # a few units' values, copied
                   self._csr(name, "stacked", self._values[name].index_select(0, sel), sel))
            h = torch.addmm(bias.reshape(-1, 1), csr, xt).view(-1, cw[0].shape[1], m).transpose(1, 2)
        else:
            xm = x.reshape(m, -1).to(self.compute_dtype)
            w = cw[0] if sel is None else cw[0][sel]
            k, out_f = w.shape[:2]
            # [M, k*out] viewed as [k, M, out]: the next batched product reads it strided, no copy
            h = torch.addmm(bias.reshape(-1), xm, w.reshape(k * out_f, -1).t()).view(m, k, out_f).transpose(0, 1)
        for layer in range(1, len(cw)):
            w, b = (cw[layer], cb[layer]) if sel is None else (cw[layer][sel], cb[layer][sel])
            h = torch.baddbmm(b.unsqueeze(1), h.relu_(), w.transpose(1, 2))
        return h.float()


def make_engine(template: nn.Module, states: Sequence[dict[str, torch.Tensor]], masks: Sequence[Mask],
                device, precision: str = "fp32") -> Engine:
    """The fastest engine that can train ``template``'s architecture."""
    if type(template) is MLP:
        return MLPEngine(template, states, masks, device, precision)
    return VmapEngine(template, states, masks, device, precision)
