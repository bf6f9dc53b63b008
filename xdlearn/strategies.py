"""Fine-tuning strategies as options of the one loop: what to train, how fast, and what to stay near.

A transformer classifier is seen as an ordered stack of *layer groups*, bottom to top:
``embeddings, layer 0, ..., layer N-1, head``. Freezing, gradual unfreezing and discriminative
learning rates all act on that stack; the regularisers are ``model -> loss`` callables for ``fit``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _encoder(model: nn.Module) -> nn.Module:
    """The backbone inside a ``*ForSequenceClassification`` model (``model.bert``, ``model.distilbert``...)."""
    prefix = getattr(model, "base_model_prefix", None)
    return getattr(model, prefix, model) if prefix else model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks, found as the longest ModuleList in the backbone (BERT, DistilBERT, ...)."""
    lists = [m for m in _encoder(model).modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no stack of layers to freeze or unfreeze")
    return max(lists, key=len)


def _beside_layers(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the module holding the layer stack that are in no layer: shared by every layer (MPNet's
    relative-position bias), so they sit at the bottom with the embeddings; freezing the layers must freeze them too."""
    layers, backbone = encoder_layers(model), _encoder(model)
    holder = next(m for m in backbone.modules() if any(child is layers for child in m.children()))
    if holder is backbone or holder is model:   # the backbone itself (GPT-2's): its other weights are not all shared
        return []
    in_layers = {id(p) for p in layers.parameters()}
    return [p for p in holder.parameters() if id(p) not in in_layers]


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters grouped bottom-to-top: [embeddings, layer 0, ..., layer N-1, head (the rest)].

    The bottom group also holds weights beside the layer stack that every layer reads (``_beside_layers``).
    """
    layers = encoder_layers(model)
    in_layers = {id(p) for p in layers.parameters()}
    embeddings = getattr(_encoder(model), "embeddings", None)
    in_embeddings = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    in_embeddings |= {id(p) for p in _beside_layers(model)}
    groups = [[p for p in model.parameters() if id(p) in in_embeddings]]
    groups += [list(layer.parameters()) for layer in layers]
    groups.append([p for p in model.parameters() if id(p) not in in_layers | in_embeddings])
    return groups


def set_trainable(model: nn.Module, top_groups: int) -> int:
    """Train only the top ``top_groups`` layer groups (1 = the head only); returns trainable parameters."""
    groups = layer_groups(model)
    for i, params in enumerate(groups):
        for p in params:
            p.requires_grad = i >= len(groups) - top_groups
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze(model: nn.Module, embeddings: bool = True, layers: int | Sequence[int] = 0) -> int:
    """Freeze the embeddings and the bottom ``layers`` blocks (or the listed ones); returns trainable count."""
    groups = layer_groups(model)
    frozen = set(range(layers) if isinstance(layers, int) else layers)
    for i, params in enumerate(groups[1:-1]):
        for p in params:
            p.requires_grad = i not in frozen
    for p in groups[0]:
        p.requires_grad = not embeddings
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_probe(model: nn.Module) -> int:
    """Freeze everything below the classification head: only the head learns."""
    return set_trainable(model, 1)


def layerwise_lr_groups(model: nn.Module, lr: float, decay: float, weight_decay: float = 0.01) -> list[dict]:
    """Discriminative learning rates: the head gets ``lr``, each group below ``decay`` times the one above."""
    groups = layer_groups(model)
    out = []
    for depth, params in enumerate(reversed(groups)):  # depth 0 = head
        for no_decay in (False, True):
            chosen = [p for p in params if (p.ndim < 2) == no_decay]
            if chosen:
                out.append({"params": chosen, "lr": lr * decay ** depth,
                            "weight_decay": 0.0 if no_decay else weight_decay})
    return out


class GradualUnfreezing:
    """ULMFiT-style: start with the head only and unfreeze one more group every ``every`` steps."""

    def __init__(self, model: nn.Module, every: int):
        self.model, self.every = model, max(1, every)
        self.total = len(layer_groups(model))
        self.trainable = set_trainable(model, 1)

    def on_step(self, step: int) -> None:
        """Called by ``fit`` before each optimiser step (``step`` counts from 0)."""
        top = min(self.total, 1 + step // self.every)
        self.trainable = set_trainable(self.model, top)


class L1:
    r"""Sparsity pressure: :math:`\lambda \sum_i |w_i|` over trainable weights."""

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return self.weight * sum(p.abs().sum() for p in penalised_weights(model))


class _SquaredDistance(torch.autograd.Function):
    r""":math:`\sum (w - a)^2` whose backward recomputes :math:`2(w - a)` instead of storing it.

    Autograd would keep ``w - a`` for every parameter until ``backward``: one extra copy of the model.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, anchor)  # references, not copies
        return ((weight - anchor) ** 2).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, anchor = ctx.saved_tensors
        return grad * 2 * (weight - anchor), None


def squared_distance(weight: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\lVert w - a\rVert^2` (``a`` = 0 when not given), differentiable in ``w``, without a stored copy."""
    return _SquaredDistance.apply(weight, anchor if anchor is not None else weight.new_zeros(()))


class L2:
    r"""Weight decay written as a loss: :math:`\frac{\alpha}{2}\lVert w\rVert^2` (pulls weights to zero)."""

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return 0.5 * self.weight * sum(squared_distance(p) for p in penalised_weights(model))


class L2SP:
    r"""L2-SP (Li et al. 2018): :math:`\frac{\alpha}{2}\lVert w - w^0\rVert^2 + \frac{\beta}{2}\lVert w_{head}\rVert^2`.

    Pulls the pretrained backbone toward its *starting point* instead of toward zero, so fine-tuning
    keeps what pretraining learned; the new head, which has no meaningful start, gets plain L2.
    ``anchor``: a model holding :math:`w^0` that stays unchanged (e.g. the pretrained model a copy was
    made from); its weights are used in place, instead of a clone of ``model``'s starting weights.
    """

    def __init__(self, model: nn.Module, alpha: float = 0.01, beta: float = 0.01, anchor: nn.Module | None = None):
        self.alpha, self.beta = alpha, beta
        head = {id(p) for p in layer_groups(model)[-1]}
        names = {name for name, p in model.named_parameters() if id(p) not in head}
        if anchor is None:
            self.start = {name: p.detach().clone() for name, p in model.named_parameters() if name in names}
        else:
            start = dict(anchor.named_parameters())
            missing = sorted(names - set(start))
            if missing:
                raise ValueError(f"anchor model has no parameter(s) {missing[:3]}: it must have the same architecture")
            self.start = {name: start[name].detach() for name in names}

    def __call__(self, model: nn.Module) -> torch.Tensor:
        near, head = 0.0, 0.0
        for name, p in model.named_parameters():
            name = name.removeprefix("module.")  # under DDP the model is wrapped
            if name in self.start:
                near = near + squared_distance(p, self.start[name])
            elif p.ndim > 1:
                head = head + squared_distance(p)
        return 0.5 * self.alpha * near + 0.5 * self.beta * head


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout layer's probability to ``p`` (more dropout: a regulariser for tiny budgets)."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
    return count


def penalised_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights L1 and L2 act on: trainable matrices (biases and LayerNorm scales have ``ndim`` 1)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim > 1]


def exact_zeros(model: nn.Module) -> dict:
    """How many penalised weights are exactly 0.0: sparsity is a claim about exact zeros, not small values."""
    weights = penalised_weights(model)
    return {"zeros": int(sum(int((p == 0).sum()) for p in weights)), "weights": sum(p.numel() for p in weights)}


def drift(model: nn.Module, anchor: nn.Module) -> float:
    r""":math:`\lVert w - w^0\rVert` over the transformer layers: how far fine-tuning moved them from ``anchor``."""
    start = [p.detach() for p in encoder_layers(anchor).parameters()]
    moved = [p.detach() for p in encoder_layers(model).parameters()]
    if [p.shape for p in start] != [p.shape for p in moved]:
        raise ValueError(f"anchor {type(anchor).__name__} has other layers than the model: it must be the same architecture")
    return float(sum(squared_distance(w, a) for w, a in zip(moved, start))) ** 0.5
