"""lth.api.find_tickets: the whole protocol on users' own models and data."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lth
from lth.cli import main as lth_main
from lth.store import StoreError


def loader(x, y, batch=97):
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def strip(records):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def test_a_dataloader_and_a_sequential_mlp_give_the_records_of_lth_run(tmp_path, digits):
    """The same protocol as the digits-quick preset, reached through the API with a user's
    nn.Sequential and DataLoaders, gives the very same records as `lth run`."""
    s = digits
    cfg = lth.get_preset("digits-quick")
    search = lth.find_tickets(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(),
                              nn.Linear(50, 10)),
        loader(s.train_x, s.train_y), loader(s.val_x, s.val_y), loader(s.test_x, s.test_y),
        config=cfg, levels=2, trials=2, iterations=200, branches=["ticket", "reinit", "random_mask"], init="lth",
        num_classes=10, out=tmp_path / "api", log=None)
    assert lth_main(["run", "--preset", "digits-quick", "--levels", "2", "--trials", "2", "--iterations", "200",
                     "--branches", "ticket,reinit,random_mask", "--quiet", "--run-dir", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert len(cli) == 2 * (1 + 2 * 3)
    assert strip([r.to_dict() for r in search.records]) == strip(cli)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_a_cnn_with_batchnorm_finds_nested_tickets_and_resumes(tmp_path, digits):
    s = digits
    kw = dict(levels=2, trials=1, iterations=60, eval_every=30, branches=["ticket", "random_mask"],
              out=tmp_path, log=None)
    search = lth.find_tickets(SmallCNN, (s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y), **kw)
    assert sorted(search.mask(1)) == ["conv.weight", "head.weight"]  # BatchNorm is never pruned
    m1, m2 = search.mask(1), search.mask(2)
    assert all(bool((m2[n] & ~m1[n]).sum() == 0) for n in m1)  # IMP masks only shrink
    init = search.weights(2, which="init")
    theta0 = torch.load(search.run_dir / "trial_0" / "theta0.pt", weights_only=True)
    assert torch.equal(init["conv.weight"], theta0["conv.weight"] * m2["conv.weight"])
    assert torch.equal(init["bn.weight"], theta0["bn.weight"])
    final = search.weights(2)
    assert float(final["head.weight"][~m2["head.weight"]].abs().sum()) == 0.0
    again = lth.find_tickets(SmallCNN, (s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y), **kw)
    assert again.run_dir == search.run_dir
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in search.records]  # nothing retrained


class TokenModel(nn.Module):
    """Embedding + LayerNorm: neither may be pruned by default."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.body = nn.Linear(8 * 4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(self.norm(self.emb(x)).flatten(1))))


def _tokens(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 20, (n, 4), generator=g)
    return x, (x[:, 0] % 3)


def test_embedding_and_layernorm_are_not_pruned_and_patterns_choose_the_rest(tmp_path):
    data = [_tokens(n, i) for i, n in enumerate((300, 100, 100))]
    search = lth.find_tickets(TokenModel, *data, levels=1, trials=1, iterations=40, eval_every=20,
                              branches=["ticket"], out=tmp_path, log=None)
    assert sorted(search.mask(1)) == ["body.weight", "head.weight"]
    only_body = lth.find_tickets(TokenModel, *data, levels=1, trials=1, iterations=40, eval_every=20,
                                 branches=["ticket"], prunable={"include": ["body.*"]}, out=tmp_path, log=None)
    assert sorted(only_body.mask(1)) == ["body.weight"]
    assert only_body.run_dir != search.run_dir  # the prunable set is part of the run identity
    assert lth.density(only_body.mask(1)) == pytest.approx(0.8, abs=0.01)


def test_progress_goes_to_the_given_sink_instead_of_log(tmp_path):
    from lth.experiment import ProgressSink

    class Seen(ProgressSink):
        def __init__(self):
            self.evaluations = []

        def evaluated(self, key, point):
            self.evaluations.append((key.level, point.iteration))

    data = [_tokens(n, i) for i, n in enumerate((300, 100, 100))]
    seen, lines = Seen(), []
    lth.find_tickets(TokenModel, *data, levels=1, trials=1, iterations=40, eval_every=20, branches=["ticket"],
                     out=tmp_path, log=lines.append, progress=seen)
    assert seen.evaluations == [(0, 0), (0, 20), (0, 40), (1, 0), (1, 20), (1, 40)] and lines == []


def test_custom_loss_and_training_step_are_used(tmp_path, digits):
    s = digits
    seen = {"loss": 0, "step": 0}

    def loss_fn(logits, y):
        seen["loss"] += 1
        return nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    def step_fn(model, x, y):
        seen["step"] += 1
        return nn.functional.cross_entropy(model(x), y) + 0.0 * sum(p.sum() for p in model.parameters())

    data = ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y))
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    smooth = lth.find_tickets(make, *data, levels=0, trials=1, iterations=30, eval_every=30, loss_fn=loss_fn,
                              out=tmp_path / "a", log=None)
    plain = lth.find_tickets(make, *data, levels=0, trials=1, iterations=30, eval_every=30, out=tmp_path / "b",
                             log=None)
    assert seen["loss"] > 30  # training steps and evaluation chunks
    assert smooth.records[0].min_val_loss != plain.records[0].min_val_loss
    lth.find_tickets(make, *data, levels=0, trials=1, iterations=30, eval_every=30, step_fn=step_fn,
                     out=tmp_path / "c", log=None)
    assert seen["step"] == 30


def test_another_model_or_bad_data_is_refused_with_a_clear_error(tmp_path, digits):
    s = digits
    data = ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y))
    small = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    first = lth.find_tickets(small, *data, levels=0, trials=1, iterations=10, eval_every=10, out=tmp_path, log=None)
    wide = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(StoreError, match="another model or data set"):
        lth.find_tickets(wide, *data, levels=0, trials=1, iterations=10, eval_every=10, run_dir=first.run_dir,
                         log=None)
    with pytest.raises(ValueError, match="train: 10 inputs but 9 labels"):
        lth.find_tickets(small, (s.train_x[:10], s.train_y[:9]), *data[1:], out=tmp_path, log=None)
    with pytest.raises(ValueError, match="class indices"):
        lth.find_tickets(small, (s.train_x, s.train_y.float()), *data[1:], out=tmp_path, log=None)


def test_a_user_run_says_what_it_holds_and_lth_export_points_to_python(tmp_path, digits, capsys):
    s = digits
    data = ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y))
    search = lth.find_tickets(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), *data, levels=1, trials=1,
                              iterations=10, eval_every=10, branches=["ticket"], out=tmp_path, log=None)
    stored = json.loads((search.run_dir / "config.json").read_text())
    assert stored["model"]["name"] == "user" and stored["data"]["dataset"] == "user"  # not a registry entry
    assert lth_main(["export", str(search.run_dir), "--level", "1"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("lth: error:") and "find_tickets" in err and ".mask(level)" in err
    assert lth_main(["report", str(search.run_dir)]) == 0  # reports read the records alone
