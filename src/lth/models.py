"""The model zoo: registry name -> nn.Module builder, and which parameters a mask covers.

Architectures follow Frankle & Carbin (2019), Figure 2 / Table 1: LeNet-300-100, Conv-2/4/6
(VGG-style 3x3 convolutions, max-pool after each pair, fc 256-256-10), a CIFAR ResNet-20 and
VGG-19. The zoo knows nothing about pruning schedules or the lottery driver; it only says which
weights are prunable, which layer is the output layer and which layers must never be pruned.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

ModelBuilder = Callable[[tuple[int, ...], int], nn.Module]
MODELS: dict[str, ModelBuilder] = {}


class ModelError(ValueError):
    """Unknown model or a model that cannot take the data set's input shape."""


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise RuntimeError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build an *uninitialised-by-us* model; call :func:`initialize` with a seeded generator."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    try:
        return MODELS[name](tuple(input_shape), num_classes)
    except ModelError:
        raise
    except Exception as e:  # a shape that does not fit the architecture
        raise ModelError(
            f"model {name!r} cannot take inputs of shape {tuple(input_shape)}: {e}"
        ) from e


def check_fit(name: str, input_shape: tuple[int, ...], num_classes: int, dataset: str = "") -> None:
    """Build the model and push one example through it, so a data set whose input shape does not
    fit the architecture fails before any training, with a message naming both."""
    model = build_model(name, input_shape, num_classes)
    try:
        with torch.no_grad():
            model.eval()
            out = model(torch.zeros(1, *input_shape))
    except Exception as e:
        raise ModelError(
            f"model {name!r} cannot take the inputs of data set {dataset or '?'} "
            f"(shape {tuple(input_shape)}): {e}. Choose a model that fits, e.g. lenet300 for any input."
        ) from e
    if tuple(out.shape) != (1, num_classes):
        raise ModelError(f"model {name!r} gives outputs of shape {tuple(out.shape)[1:]}, "
                         f"expected ({num_classes},) for data set {dataset or '?'}")


# --------------------------------------------------------------------------- prunable parameters

_PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_parameters(model: nn.Module) -> list[str]:
    """Names of the weights a mask covers, in module order.

    Linear and convolution weights by default; biases and normalisation layers are never pruned
    (paper App. B). A model may declare ``never_prune`` (parameter names, e.g. ResNet's 1x1
    downsampling shortcuts) to keep layers dense. Works on any nn.Module.
    """
    never = set(getattr(model, "never_prune", ()))
    names = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, _PRUNABLE_TYPES):
            pname = f"{mod_name}.weight" if mod_name else "weight"
            if pname not in never:
                names.append(pname)
    return names


def prunable_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` for :func:`prunable_parameters` (what a dense mask is built over)."""
    params = dict(model.named_parameters())
    return {n: params[n] for n in prunable_parameters(model)}


def output_parameter(model: nn.Module) -> str | None:
    """The output layer's weight (pruned at half rate by default): declared, else the last Linear."""
    declared = getattr(model, "output_weight", None)
    if declared is not None:
        return declared
    last = None
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = f"{mod_name}.weight" if mod_name else "weight"
    return last


def is_conv_parameter(model: nn.Module, name: str) -> bool:
    mod = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


# --------------------------------------------------------------------------- initialisation


def initialize(model: nn.Module, generator: torch.Generator) -> None:
    """Seeded initialisation of every parameter, from the distribution the model declares.

    ``glorot_normal`` (LeNet, Conv-N: "Gaussian Glorot", paper App. B) or ``kaiming_normal``
    (ResNet/VGG, as in the follow-up papers' code) for Linear/Conv weights; biases 0;
    normalisation layers weight 1, bias 0. Drawn on the CPU from ``generator`` so that the same seed
    gives the same theta0 on every device.
    """
    scheme = getattr(model, "init_scheme", "glorot_normal")
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, _PRUNABLE_TYPES):
                w = mod.weight
                fan_in = w.shape[1] * math.prod(w.shape[2:])
                fan_out = w.shape[0] * math.prod(w.shape[2:])
                if scheme == "glorot_normal":
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                elif scheme == "kaiming_normal":
                    std = math.sqrt(2.0 / fan_in)
                else:
                    raise ModelError(f"unknown init scheme {scheme!r}")
                w.copy_(torch.randn(w.shape, generator=generator) * std)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                if getattr(mod, "weight", None) is not None:
                    mod.weight.fill_(1.0)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()


# --------------------------------------------------------------------------- architectures


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs (LeNet-300-100 is hidden=(300, 100))."""

    init_scheme = "glorot_normal"

    def __init__(self, in_features: int, hidden: Iterable[int], num_classes: int):
        super().__init__()
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_weight = "out.weight"

    def linear_relu_chain(self) -> list[str]:
        """The Linear layers in order: this model is ``flatten -> (Linear -> ReLU)* -> Linear``,
        which the vectorised MLP engine trains with a hand-written backward pass."""
        return [f"hidden.{i}" for i in range(len(self.hidden))] + ["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


@register("lenet300")
def lenet300(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), (300, 100), num_classes)


@register("mlp-100-50")
def mlp_100_50(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small fully connected network for the 8x8 digits demo."""
    return MLP(math.prod(input_shape), (100, 50), num_classes)


class ConvNet(nn.Module):
    """Conv-2/4/6: pairs of 3x3 conv+ReLU, each pair followed by 2x2 max-pool, then fc 256-256."""

    init_scheme = "glorot_normal"

    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...], num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"Conv networks need (channels, height, width) inputs, got {input_shape}")
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
            if i % 2 == 1:
                if h < 2 or w < 2:
                    raise ModelError(f"input {input_shape} is too small for {len(widths)} conv layers")
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, 256), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(256, 256), nn.ReLU(), nn.Dropout(dropout),
        )
        self.out = nn.Linear(256, num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.features(x)))


for _n, _widths in {2: (64, 64), 4: (64, 64, 128, 128), 6: (64, 64, 128, 128, 256, 256)}.items():
    register(f"conv{_n}")(lambda s, k, _w=_widths: ConvNet(s, _w, k))
    register(f"conv{_n}-dropout")(lambda s, k, _w=_widths: ConvNet(s, _w, k, dropout=0.5))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016): 16 filters, 3 stages x 3 blocks, avg-pool, fc.

    The paper's table calls it "Resnet-18"; 274K weights. The 1x1 downsampling shortcuts and the
    output layer are not pruned (paper App. I protocol).
    """

    init_scheme = "kaiming_normal"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks: int = 3,
                 width: int = 16):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"ResNet needs (channels, height, width) inputs, got {input_shape}")
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*stages)
        self.out = nn.Linear(cin, num_classes)
        self.output_weight = "out.weight"
        self.never_prune = tuple(
            f"{n}.weight" for n, m in self.named_modules()
            if n.endswith("shortcut.0") and isinstance(m, nn.Conv2d)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.out(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("resnet20")
def resnet20(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CifarResNet(input_shape, num_classes)


class VGG(nn.Module):
    """VGG-19 for CIFAR (as in the paper, App. I): 16 conv layers with BatchNorm, avg-pool, fc 10."""

    init_scheme = "kaiming_normal"
    PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
            512, 512, 512, 512)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"VGG needs (channels, height, width) inputs, got {input_shape}")
        layers: list[nn.Module] = []
        c = input_shape[0]
        for v in self.PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c, num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.out(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("vgg19")
def vgg19(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return VGG(input_shape, num_classes)
