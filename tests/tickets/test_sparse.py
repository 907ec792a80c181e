"""lth.tickets.sparse: sparse layers give the dense layers' outputs; sparsify's threshold rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.tickets.sparse import DEFAULT_THRESHOLD, SparseConv2d, SparseLinear, sparse_layers, sparsify, to_csr


def random_linear(i: int, o: int, density: float, seed: int, bias: bool = True):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(i, o, bias=bias)
    mask = torch.rand(o, i, generator=g) < density
    with torch.no_grad():
        layer.weight.copy_(torch.randn(o, i, generator=g) * mask)
        if bias:
            layer.bias.copy_(torch.randn(o, generator=g))
    return layer, mask


@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_sparse_linear_equals_dense_linear(density, batch):
    layer, mask = random_linear(83, 41, density, seed=batch)
    sp = SparseLinear.from_dense(layer, mask)
    assert sp.nnz == int(mask.sum())
    x = torch.randn(batch, 83)
    with torch.no_grad():
        ref = layer(x)
        out = sp(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sp.to_dense().weight, layer.weight, rtol=0, atol=0)


def test_sparse_linear_takes_nd_inputs_no_bias_and_chains_without_copies():
    a, ma = random_linear(20, 30, 0.1, seed=1, bias=False)
    b, mb = random_linear(30, 5, 0.2, seed=2)
    sa, sb = SparseLinear.from_dense(a), SparseLinear.from_dense(b, mb)
    x = torch.randn(4, 3, 20)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), a(x), rtol=1e-5, atol=1e-5)
        h = torch.relu(sa(x.reshape(12, 20)))
        assert h.t().is_contiguous()  # feature-major layout survives the ReLU
        torch.testing.assert_close(sb(h), b(torch.relu(a(x.reshape(12, 20)))), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(nn.Linear.forward(b, h), b(h.contiguous()))  # dense after sparse


def test_to_dense_round_trips_the_layer_and_from_dense_drops_weights_outside_the_mask():
    layer, mask = random_linear(50, 20, 0.25, seed=3)
    back = SparseLinear.from_dense(layer, mask).to_dense()
    assert isinstance(back, nn.Linear) and (back.in_features, back.out_features) == (50, 20)
    assert torch.equal(back.weight, layer.weight) and torch.equal(back.bias, layer.bias)
    nobias = SparseLinear.from_dense(random_linear(5, 4, 0.5, seed=4, bias=False)[0]).to_dense()
    assert nobias.bias is None
    # a weight outside the mask is treated as pruned; a zero weight inside it stays stored
    with torch.no_grad():
        layer.weight.add_(1.0)
    sp = SparseLinear.from_dense(layer, mask)
    assert torch.equal(sp.to_dense().weight, layer.weight * mask)
    zero_inside = mask.clone()
    with torch.no_grad():
        layer.weight[zero_inside] = 0.0
    assert SparseLinear.from_dense(layer, zero_inside).nnz == int(mask.sum())
    assert SparseLinear.from_dense(layer).nnz == int((layer.weight != 0).sum())
    assert sp.density == pytest.approx(int(mask.sum()) / mask.numel())
    assert f"nnz={sp.nnz}" in repr(sp)


def test_to_csr_checks_its_input():
    csr = to_csr(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    assert csr.layout == torch.sparse_csr and csr.crow_indices().dtype == torch.int32
    assert torch.equal(csr.to_dense(), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D"):
        to_csr(torch.ones(3))
    with pytest.raises(ValueError, match="pattern shape"):
        to_csr(torch.ones(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="CSR weight"):
        SparseLinear(torch.ones(2, 2), None)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_sparse_conv2d_equals_dense_conv2d(stride, padding, dilation):
    g = torch.Generator().manual_seed(stride + padding)
    conv = nn.Conv2d(3, 8, 3, stride=stride, padding=padding, dilation=dilation)
    mask = torch.rand(conv.weight.shape, generator=g) < 0.2
    with torch.no_grad():
        conv.weight.mul_(mask)
    sp = SparseConv2d.from_dense(conv, mask)
    x = torch.randn(5, 3, 11, 13, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(sp(x), conv(x), rtol=1e-5, atol=1e-5)


def test_sparse_conv2d_without_bias_and_rectangular_kernel():
    g = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(2, 5, (3, 2), stride=(1, 2), padding=(1, 0), bias=False)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape, generator=g) < 0.3)
    sp = SparseConv2d.from_dense(conv)
    assert sp.nnz == int((conv.weight != 0).sum())
    x = torch.randn(3, 2, 9, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(sp(x), conv(x), rtol=1e-5, atol=1e-5)


def test_sparsify_converts_only_layers_below_the_threshold():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[1].weight.mul_(torch.rand(32, 64) < 0.05)
    sp = sparsify(model)
    assert isinstance(sp[1], SparseLinear) and isinstance(sp[3], nn.Linear)
    assert isinstance(model[1], nn.Linear)  # not in place by default
    assert set(sparse_layers(sparsify(model, 1.0))) == {"1"}  # the other layer has no zero
    x = torch.randn(9, 64)
    with torch.no_grad():
        torch.testing.assert_close(sp(x), model(x), rtol=1e-5, atol=1e-5)
    assert 0 < DEFAULT_THRESHOLD < 1
    with pytest.raises(ValueError, match="threshold"):
        sparsify(model, 0.0)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3))
    assert not sparse_layers(sparsify(conv, 1.0))
    with torch.no_grad():
        conv[0].weight.mul_(0)
    assert isinstance(sparsify(conv, 1.0, convs=True)[0], SparseConv2d)


def test_sparsify_threshold_is_strict_and_masks_decide_the_density():
    layer = nn.Linear(10, 10)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:, :2] = True  # 20% kept by the mask, although no weight is zero
    model = nn.Sequential(layer)
    assert not sparse_layers(sparsify(model, 0.2, masks={"0.weight": mask}))  # 0.2 is not < 0.2
    sp = sparsify(model, 0.21, masks={"0.weight": mask})
    assert set(sparse_layers(sp)) == {"0"} and sp[0].nnz == 20
    assert not sparse_layers(sparsify(model, 0.21))  # without the mask: dense, no zeros
    with pytest.raises(ValueError, match="threshold"):
        sparsify(model, 1.5)
    # a bare layer is replaced as a whole; inplace changes the caller's model
    assert isinstance(sparsify(layer, 1.0, masks={"weight": mask}), SparseLinear)
    nested = nn.Sequential(nn.Sequential(nn.Linear(10, 10)))
    with torch.no_grad():
        nested[0][0].weight.zero_()
    assert sparsify(nested, inplace=True) is nested and isinstance(nested[0][0], SparseLinear)
    assert not nested.training


@pytest.mark.parametrize("conv", [nn.Conv2d(2, 4, 3, groups=2), nn.Conv2d(1, 4, 3, padding="same"),
                                  nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")])
def test_unsupported_convolutions_stay_dense_and_are_refused_by_from_dense(conv):
    with torch.no_grad():
        conv.weight.mul_(0)
    assert not sparse_layers(sparsify(nn.Sequential(conv), 1.0, convs=True))
    with pytest.raises(ValueError, match="groups=1"):
        SparseConv2d.from_dense(conv)
