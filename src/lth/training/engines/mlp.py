"""A hand-written engine for fully connected ReLU networks (LeNet-300-100), N units at once.

Batched matrix products forward, an explicit backward pass (no autograd graph, no per-unit Python
work, no gradient w.r.t. the data), and batched evaluation (the first layer of every unit as one
wide GEMM, whose output columns do not depend on the width, so a unit's numbers do not depend on
its group). When every unit keeps the same number of weights per layer (all units of an IMP level
do: ticket, reinit and random mask have the same per-layer counts), the optimizer steps only the
surviving weights, held compactly: Adam's memory-bound update and the gradient masking then cost
in proportion to the density, not to the dense size. Large, very sparse layers use CSR kernels;
where each kernel takes over is :class:`lth.training.engines.policy.EnginePolicy`.

Precision ``"bf16"`` runs the matrix products in bfloat16 (AMX/AVX512-BF16 on recent CPUs, tensor
cores on GPUs) while weights, optimizer state, loss and softmax stay float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .base import StackedEngine


def linear_relu_chain(model: nn.Module) -> list[str] | None:
    """The module names of ``model``'s Linear layers, in order, if ``model`` computes
    ``flatten -> Linear -> ReLU -> ... -> Linear`` and nothing else; else None.

    Recognised: a model that declares the chain itself (a ``linear_relu_chain()`` method returning
    the names, as :class:`lth.models.MLP` does), or an ``nn.Sequential`` of an optional leading
    ``nn.Flatten()`` and Linear layers separated by ``nn.ReLU``. No other parameters or buffers."""
    declared = getattr(model, "linear_relu_chain", None)
    if callable(declared):
        names = list(declared())
    elif isinstance(model, nn.Sequential):
        mods = list(model.named_children())
        if mods and isinstance(mods[0][1], nn.Flatten) and (mods[0][1].start_dim, mods[0][1].end_dim) == (1, -1):
            mods = mods[1:]
        if not mods or len(mods) % 2 == 0:
            return None
        for i, (_, mod) in enumerate(mods):
            want = nn.Linear if i % 2 == 0 else nn.ReLU
            if type(mod) is not want:
                return None
        names = [name for i, (name, _) in enumerate(mods) if i % 2 == 0]
    else:
        return None
    linears = [model.get_submodule(n) for n in names]
    if not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears):
        return None
    expected = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    if {k for k, _ in model.named_parameters()} != expected or any(True for _ in model.buffers()):
        return None
    return names


class MLPEngine(StackedEngine):
    """Fully connected ReLU chains (:func:`linear_relu_chain`) with an explicit backward pass.

    Per layer, the cheapest correct gradient path is chosen once: unpruned layers (no mask, or
    every unit's mask full, as at IMP level 0) take the weight gradient straight from the batched
    product; masked dense layers multiply it by the mask; compact layers gather the surviving
    entries. In bf16 the weights are kept as bf16 copies updated in place (compact layers scatter
    only their surviving values), and the float32 weights of compact layers are brought up to
    date lazily, when a unit's state or an evaluation needs them.
    """

    @classmethod
    def supports(cls, model: nn.Module, n_units: int) -> bool:
        return linear_relu_chain(model) is not None

    def __init__(self, template, states, masks, device, precision="fp32", policy=None):
        super().__init__(template, states, masks, device, precision, policy)
        layers = linear_relu_chain(template)
        if layers is None:
            raise ValueError(f"MLPEngine needs a chain of Linear layers with ReLU between them, got "
                             f"{type(template).__name__}")
        n = self.n_units
        pol = self.policy
        self.weights = [self.params[f"{ln}.weight"] for ln in layers]  # [N, out, in]
        self.biases = [self.params[f"{ln}.bias"] for ln in layers]  # [N, out]
        self._wname = [f"{ln}.weight" for ln in layers]
        for k in self.mask_names:
            counts = self.masks[k].flatten(1).sum(1)
            if bool((counts == counts[0]).all()) and int(counts[0]) < pol.compact_below * self.masks[k][0].numel():
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
                if name not in self.compact or self.params[name][0].numel() < pol.sparse_min_weights:
                    continue
                dens = self.compact[name].shape[1] / self.params[name][0].numel()
                if dens < pol.sparse_forward_below:
                    self._block[name] = self._csr(name, "block", self._values[name])
                    self._sparse_fwd.add(name)
                if dens < (pol.sparse_grad_below_one_unit if n == 1 else pol.sparse_grad_below):
                    self._sddmm[name] = self._csr(name, "batched", self._values[name].grad)
                if dens < pol.sparse_eval_below:
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
        return (self.policy.sparse_eval_chunk if self._wname[0] in self.sparse_eval
                else self.policy.dense_eval_chunk)

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
        # other units share its group, bitwise on the AVX-512 EPYC we measure on; BLAS does not
        # promise it, and one CPU rounded a narrower product differently in the last bit.
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
