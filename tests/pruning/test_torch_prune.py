"""lth.pruning.torch_prune: masks to and from torch.nn.utils.prune, and winning_ticket on any nn.Module,
checked element by element against torch's own l1_unstructured / global_unstructured."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth.models import build_model, get_tensor, initialize, prunable_parameters
from lth.pruning import from_torch_prune, to_torch_prune, winning_ticket
from tests.pruning.reference import assert_no_ties


class SmallBNNet(nn.Module):
    """A CNN with BatchNorm that lth does not know."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.body(x))


class TextNet(nn.Module):
    """Embedding + LayerNorm (never pruned by default) + Linear layers."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 12)
        self.norm = nn.LayerNorm(12)
        self.encoder = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 12))
        self.classifier = nn.Linear(12, 3)

    def forward(self, tokens):
        return self.classifier(self.encoder(self.norm(self.embed(tokens))).mean(1))


def pair(make, seed: int = 0):
    """``(trained, copy)``: two nets of one architecture, with different weights.

    The trained weights stand in for training: a random permutation of distinct magnitudes with
    random signs, so no two weights tie anywhere (torch breaks ties in an unspecified order).
    """
    torch.manual_seed(seed)
    init = make()
    trained = copy.deepcopy(init)
    params = list(trained.parameters())
    total = sum(p.numel() for p in params)
    mags = (torch.randperm(total) + 1).float() * (3.0 / total)
    signs = torch.randint(0, 2, (total,)).float() * 2 - 1
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_((mags * signs)[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
    return trained, init


def torch_reference(trained: nn.Module, names: list[str], amount, scope: str) -> dict[str, torch.Tensor]:
    """torch's own masks: l1_unstructured per parameter or global_unstructured, on a copy of trained."""
    ref = copy.deepcopy(trained)
    targets = [(ref.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names]
    if scope == "layer":
        for mod, attr in targets:
            prune.l1_unstructured(mod, attr, amount=amount)
    else:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    return {n: getattr(mod, f"{attr}_mask").bool() for n, (mod, attr) in zip(names, targets)}


MODELS = {
    "small-bn-cnn": SmallBNNet,
    "text-net": TextNet,
    "mlp-100-50": lambda: build_model("mlp-100-50", (1, 8, 8), 10),
}


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("amount", [0.2, 0.5, 0.73, 0.0, 1.0, 3, 0], ids=lambda a: f"{type(a).__name__}-{a}")
@pytest.mark.parametrize("model", sorted(MODELS))
def test_winning_ticket_equals_torch_element_by_element(model, amount, scope):
    trained, init = pair(MODELS[model])
    names = prunable_parameters(init)
    trained_before = {n: p.detach().clone() for n, p in trained.named_parameters()}
    init_values = {n: p.detach().clone() for n, p in init.named_parameters()}
    assert_no_ties(torch.cat([trained.get_parameter(n).detach().flatten() for n in names]))

    ticket, mask = winning_ticket(trained, init, amount, scope=scope)

    assert ticket is init and list(mask) == names
    expected = torch_reference(trained, names, amount, scope)
    for n in names:
        assert mask[n].dtype == torch.bool
        assert torch.equal(mask[n], expected[n]), n
        mod, attr = ticket.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]
        assert torch.equal(getattr(mod, f"{attr}_mask").bool(), mask[n]), n
        # the kept weights are the copy's own (initial) values; the pruned ones read as 0
        assert torch.equal(getattr(mod, f"{attr}_orig"), init_values[n]), n
        assert torch.equal(getattr(mod, attr), init_values[n] * mask[n]), n
    # trained is read, never changed
    assert {n: p.detach() for n, p in trained.named_parameters()}.keys() == trained_before.keys()
    assert all(torch.equal(p, trained_before[n]) for n, p in trained.named_parameters())
    # parameters outside the prunable set are untouched and not re-parametrised
    for n, p in ticket.named_parameters():
        if not n.endswith("_orig"):
            assert torch.equal(p, init_values[n]), n
    pruned = sum(int((~m).sum()) for m in mask.values())
    sizes = [m.numel() for m in mask.values()]
    if isinstance(amount, int):
        assert pruned == (amount * len(sizes) if scope == "layer" else amount)
    elif scope == "global":
        assert pruned == round(amount * sum(sizes))


def test_float_amount_rounds_half_to_even_like_torch():
    lin_t, lin_c = pair(lambda: nn.Linear(5, 1))  # 5 weights: 0.5 * 5 = 2.5 -> 2
    _, mask = winning_ticket(lin_t, lin_c, 0.5)
    assert int((~mask["weight"]).sum()) == 2
    assert torch.equal(mask["weight"], torch_reference(lin_t, ["weight"], 0.5, "layer")["weight"])


def test_the_ticket_computes_with_the_masked_initial_weights():
    trained, init = pair(SmallBNNet)
    dense = copy.deepcopy(init)
    ticket, mask = winning_ticket(trained, init, 0.6, scope="global")
    with torch.no_grad():
        for n, m in mask.items():
            dense.get_parameter(n).mul_(m)
    x = torch.randn(2, 3, 6, 6)
    ticket.eval()
    dense.eval()
    assert torch.equal(ticket(x), dense(x))


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("amount", [0.2, 0.5, 4])
def test_pruning_an_already_pruned_copy_prunes_among_survivors_like_torch(amount, scope):
    trained1, init = pair(SmallBNNet, seed=1)
    trained2, _ = pair(SmallBNNet, seed=2)
    names = prunable_parameters(init)
    winning_ticket(trained1, init, 0.3, scope=scope)
    first = from_torch_prune(init)
    # torch's reference, both rounds by torch: the same initial net pruned with trained1's then
    # trained2's magnitudes as importance scores (a torch-pruned module cannot be deep-copied)
    _, ref = pair(SmallBNNet, seed=1)
    targets = [(ref.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names]
    for trained, amt in ((trained1, 0.3), (trained2, amount)):
        scores = {n: trained.get_parameter(n).detach() for n in names}
        if scope == "layer":
            for n, (mod, attr) in zip(names, targets):
                prune.l1_unstructured(mod, attr, amount=amt, importance_scores=scores[n])
        else:
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amt,
                                      importance_scores={t: scores[n] for n, t in zip(names, targets)})
        if trained is trained1:
            for n, (mod, attr) in zip(names, targets):
                assert torch.equal(first[n], getattr(mod, f"{attr}_mask").bool()), n

    _, mask = winning_ticket(trained2, init, amount, scope=scope)
    assert all(torch.equal(mask[n], from_torch_prune(init)[n]) for n in names)
    for n, (mod, attr) in zip(names, targets):
        assert torch.equal(mask[n], getattr(mod, f"{attr}_mask").bool()), n
        assert not bool((mask[n] & ~first[n]).any()), n  # masks only shrink
    alive1 = sum(int(m.sum()) for m in first.values())
    alive2 = sum(int(m.sum()) for m in mask.values())
    if scope == "global":
        expected = amount if isinstance(amount, int) else round(amount * alive1)
        assert alive1 - alive2 == expected
    # still one re-parametrisation per parameter, removable in one call
    for mod, attr in ((init.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names):
        prune.remove(mod, attr)
    assert all(not n.endswith("_orig") for n, _ in init.named_parameters())


def test_winning_ticket_with_trained_as_its_own_copy():
    net, _ = pair(SmallBNNet)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    expected = torch_reference(net, prunable_parameters(net), 0.4, "layer")
    ticket, mask = winning_ticket(net, net, 0.4)
    assert all(torch.equal(mask[n], expected[n]) for n in expected)
    assert torch.equal(ticket.head.weight_orig, before["head.weight"])


def test_scores_of_a_torch_pruned_trained_net_are_its_masked_weights():
    trained, init = pair(SmallBNNet)
    prune.l1_unstructured(trained.head, "weight", amount=0.5)
    torch_mask = trained.head.weight_mask.bool().clone()
    _, mask = winning_ticket(trained, init, 0.5, include="head.weight")
    assert list(mask) == ["head.weight"] and torch.equal(mask["head.weight"], torch_mask)


def test_embedding_and_layernorm_stay_dense():
    trained, init = pair(TextNet)
    ticket, mask = winning_ticket(trained, init, 0.5, scope="global")
    assert list(mask) == ["encoder.0.weight", "encoder.2.weight", "classifier.weight"]
    assert isinstance(ticket.embed.weight, nn.Parameter) and isinstance(ticket.norm.weight, nn.Parameter)
    assert not any(n.startswith(("embed.", "norm.")) and n.endswith("_orig") for n, _ in ticket.named_parameters())
    assert not any("bias_orig" in n for n, _ in ticket.named_parameters())


def test_include_exclude_and_types_choose_what_is_pruned():
    trained, init = pair(TextNet)
    _, mask = winning_ticket(trained, init, 0.5, include="encoder.*", exclude="encoder.2.*")
    assert list(mask) == ["encoder.0.weight"]
    assert hasattr(init.encoder[0], "weight_orig") and not hasattr(init.encoder[2], "weight_orig")
    assert not hasattr(init.classifier, "weight_orig")
    trained, init = pair(TextNet)
    _, mask = winning_ticket(trained, init, 0.25, types=nn.Embedding)
    assert list(mask) == ["embed.weight"] and int((~mask["embed.weight"]).sum()) == 90
    expected = torch_reference(trained, ["embed.weight"], 0.25, "layer")
    assert torch.equal(mask["embed.weight"], expected["embed.weight"])


def test_mismatched_models_name_every_mismatch():
    class Other(SmallBNNet):
        def __init__(self):
            super().__init__(width=7)  # body.0 and body.3 differ in shape
            self.extra = nn.Linear(2, 2)

    trained, init = Other(), SmallBNNet()
    with pytest.raises(ValueError) as e:
        winning_ticket(trained, init, 0.2)
    msg = str(e.value)
    assert "body.0.weight: trained (7, 3, 3, 3) vs copy (6, 3, 3, 3)" in msg
    assert "body.3.weight: trained (8, 7, 3, 3) vs copy (8, 6, 3, 3)" in msg
    assert "prunable in trained but not in copy: ['extra.weight']" in msg
    assert not hasattr(init.head, "weight_orig")  # nothing pruned
    with pytest.raises(ValueError, match=r"prunable in copy but not in trained: \['extra.weight'\]"):
        winning_ticket(SmallBNNet(), Other(), 0.2, exclude="body.*")
    with pytest.raises(ValueError, match="head"):
        winning_ticket(TextNet(), SmallBNNet(), 0.2, include="head.*")


def test_bad_scope_and_amount_are_refused_before_pruning():
    trained, init = pair(SmallBNNet)
    with pytest.raises(ValueError, match="scope"):
        winning_ticket(trained, init, 0.2, scope="layerwise")
    with pytest.raises(ValueError, match="more than"):
        winning_ticket(trained, init, 10_000, scope="global")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        winning_ticket(trained, init, 1.5)
    with pytest.raises(TypeError):
        winning_ticket(trained, init, True)
    with pytest.raises(ValueError, match="no prunable parameter"):
        winning_ticket(nn.BatchNorm1d(3), nn.BatchNorm1d(3), 0.2)
    assert from_torch_prune(init) == {}


def test_winning_ticket_on_a_registered_model_after_lth_initialisation():
    init = build_model("conv2", (3, 8, 8), 10)
    initialize(init, torch.Generator().manual_seed(0))
    trained = copy.deepcopy(init)
    initialize(trained, torch.Generator().manual_seed(1))
    names = prunable_parameters(init)
    _, mask = winning_ticket(trained, init, 0.2, scope="global")
    expected = torch_reference(trained, names, 0.2, "global")
    assert all(torch.equal(mask[n], expected[n]) for n in names)


# --------------------------------------------------------------------------- to / from torch prune


def random_mask(model: nn.Module, seed: int, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = names if names is not None else prunable_parameters(model)
    return {n: torch.rand(get_tensor(model, n).shape, generator=g) < 0.6 for n in names}


def test_to_torch_prune_then_remove_gives_the_masked_weights():
    torch.manual_seed(0)
    model = SmallBNNet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = random_mask(model, 3)
    assert to_torch_prune(model, mask) is model
    for n, m in mask.items():
        mod, attr = model.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]
        assert torch.equal(getattr(mod, f"{attr}_orig"), before[n])
        assert torch.equal(getattr(mod, f"{attr}_mask"), m.float())
        prune.remove(mod, attr)
    params = dict(model.named_parameters())
    assert set(params) == set(before)  # prune.remove registers the weight anew, so last
    for n, p in params.items():
        assert torch.equal(p, before[n] * mask[n] if n in mask else before[n]), n


def test_from_torch_prune_reads_torch_masks_under_unpruned_names():
    torch.manual_seed(0)
    model = SmallBNNet()
    prune.l1_unstructured(model.body[0], "weight", amount=0.3)
    prune.random_unstructured(model.head, "weight", amount=7)
    prune.l1_unstructured(model.head, "bias", amount=2)
    m = from_torch_prune(model)
    assert list(m) == ["body.0.weight", "head.weight", "head.bias"]
    assert torch.equal(m["body.0.weight"], model.body[0].weight_mask.bool())
    assert int((~m["head.weight"]).sum()) == 7 and int((~m["head.bias"]).sum()) == 2
    assert all(t.dtype == torch.bool for t in m.values())
    # a copy, not a view of the buffers
    m["head.weight"][:] = False
    assert bool(model.head.weight_mask.any())


def test_round_trip_lth_mask_through_torch():
    model = TextNet()
    mask = random_mask(model, 5)
    to_torch_prune(model, mask)
    back = from_torch_prune(model)
    assert list(back) == list(mask) and all(torch.equal(back[n], mask[n]) for n in mask)
    # a second mask on top: torch keeps a weight only where both masks keep it
    second = random_mask(model, 6)
    to_torch_prune(model, second)
    both = from_torch_prune(model)
    assert all(torch.equal(both[n], mask[n] & second[n]) for n in mask)


def test_to_torch_prune_names_what_does_not_fit():
    model = SmallBNNet()
    with pytest.raises(ValueError) as e:
        to_torch_prune(model, {"head.weight": torch.ones(8, 5, dtype=torch.bool),
                               "tail.weight": torch.ones(1, dtype=torch.bool)})
    assert "'tail.weight'" in str(e.value) and "head.weight: mask (8, 5) vs parameter (5, 8)" in str(e.value)
    assert not hasattr(model.head, "weight_orig")
