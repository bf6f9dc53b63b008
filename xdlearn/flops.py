r"""What a model's work costs, counted rather than timed: floating-point operations per sentence.

A wall-clock speed-up measured on a shared 2-core machine moves by tens of percent from one run to the next;
a count of the arithmetic a model does on the same sentences does not move at all. Lessons therefore *print*
measured speed-ups but *assert* claims about cost on FLOPs (one multiply-add = 2 FLOPs).

The counter sees every operation torch dispatches and prices the matrix products with torch's own formulas
(``torch.utils.flop_counter``). We do not use ``FlopCounterMode`` itself because, measured with torch 2.13 on
CPU, it reports 0 FLOPs for ``nn.LSTM`` (packed or not) and nothing for the CPU attention kernel, which would
make a BiLSTM student look free and every transformer a little cheaper than it is. An unpacked ``nn.LSTM``
runs as oneDNN's fused layer, priced here by hand; a packed one runs as plain matrix products.
"""
from __future__ import annotations

from typing import Callable

import torch
from datasets import Dataset
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .data import make_loader
from .infer import predict
from .objectives import CrossEntropy, Objective

_aten = torch.ops.aten
# CPU kernels that torch's registry has no entry for, priced like their GPU twins (same arguments first)
_ALIASES = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _aten._scaled_dot_product_flash_attention_backward,
}


def _rnn_layer_flops(input, weight_ih, weight_hh, *args, **kwargs) -> int:
    """oneDNN's fused RNN layer (what ``nn.LSTM`` runs on CPU): every token meets both weight matrices."""
    tokens = input.shape[0] * input.shape[1] if input.dim() == 3 else input.shape[0]
    return 2 * tokens * (weight_ih.numel() + weight_hh.numel())


def _rnn_layer_backward_flops(input, weight_ih, weight_hh, *args, **kwargs) -> int:
    """Gradients for the input and for both weights: twice the forward products."""
    return 2 * _rnn_layer_flops(input, weight_ih, weight_hh)


_RNN = {_aten.mkldnn_rnn_layer: _rnn_layer_flops, _aten.mkldnn_rnn_layer_backward: _rnn_layer_backward_flops}


class FlopCounter(TorchDispatchMode):
    """Context manager: adds up the FLOPs of every matrix product, convolution and attention run inside it."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in _RNN:
            self.flops += _RNN[packet](*args, **kwargs)
            return out
        formula = flop_registry.get(_ALIASES.get(packet, packet))
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` (forward and, if ``fn`` calls it, backward)."""
    with FlopCounter() as counter:
        fn(*args, **kwargs)
    return counter.flops


def inference_flops(model: nn.Module, data: Dataset, tokenizer=None, batch_size: int = 64,
                    max_length: int = 128) -> float:
    """FLOPs per sentence to predict ``data``, batched as ``infer.predict`` batches it (padding included)."""
    return count_flops(predict, model, data, tokenizer, batch_size, max_length) / len(data)


def training_flops(model: nn.Module, data: Dataset, objective: Objective | None = None, tokenizer=None,
                   batch_size: int = 32, max_length: int = 128) -> float:
    """FLOPs per sentence of one training pass (forward, loss, backward) over ``data`` with ``objective``.

    Frozen parameters get no gradient, so a linear probe's backward pass is nearly free; a live teacher's
    forward pass counts, a cached one does not. The model's weights and gradients, and the global random
    state, are left exactly as they were (no optimiser step is taken); an objective with a state of its own (a
    masking generator, a target-batch stream) does advance.
    """
    objective = objective if objective is not None else CrossEntropy()
    loader = make_loader(data, tokenizer, batch_size=batch_size, shuffle=False, max_length=max_length)
    was_training = model.training
    model.train()
    total = 0
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in loader:
                total += count_flops(lambda: objective(model, batch)["loss"].backward())
                model.zero_grad(set_to_none=True)
                objective.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return total / len(data)
