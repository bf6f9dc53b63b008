"""FLOP counts: exact for layers whose arithmetic we can write down, and the same on every run."""
from __future__ import annotations

import torch
from torch import nn

from conftest import make_tiny_model
from xdlearn import distill, flops, strategies


def test_linear_layer_costs_two_flops_per_multiply_add():
    layer = nn.Linear(16, 8)
    assert flops.count_flops(layer, torch.randn(5, 16)) == 2 * 5 * 16 * 8


def test_lstm_is_counted_although_torch_flop_counter_mode_misses_it():
    """torch's FlopCounterMode reports 0 for nn.LSTM on CPU (torch 2.13); ours counts 4 gates x 2 products."""
    lstm = nn.LSTM(12, 6, batch_first=True, bidirectional=True)
    x = torch.randn(3, 7, 12)
    expected = 2 * 2 * 3 * 7 * 4 * 6 * (12 + 6)  # directions x batch x steps x gates x hidden x (in + hidden)
    assert flops.count_flops(lstm, x) == expected
    packed = nn.utils.rnn.pack_padded_sequence(x, [7, 7, 7], batch_first=True)  # the BiLSTM student's path
    assert flops.count_flops(lstm, packed) == expected


def test_convolution_and_attention_are_counted():
    conv = nn.Conv1d(4, 3, kernel_size=2)
    assert flops.count_flops(conv, torch.randn(1, 4, 10)) == 2 * 9 * 3 * 4 * 2
    q = torch.randn(1, 2, 5, 8)
    attention = flops.count_flops(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    assert attention == 2 * 2 * (2 * 5 * 5 * 8)  # QK^T and AV, each 2 x heads x L x L x d


def test_inference_flops_follow_the_layer_count(tokenizer, toy):
    model = make_tiny_model()
    test = toy["test"].select(range(32))
    deep = flops.inference_flops(model, test, tokenizer)
    assert deep == flops.inference_flops(model, test, tokenizer)  # deterministic
    from xdlearn import students
    shallow = flops.inference_flops(students.student_from_teacher(model, [0]), test, tokenizer)
    assert 1.5 < deep / shallow < 2.1  # one of two layers kept (the classifier head is shared)


def test_training_flops_see_frozen_layers_and_leave_the_model_alone(tokenizer, toy):
    model = make_tiny_model()
    batch = toy["train"].select(range(32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    full = flops.training_flops(model, batch, tokenizer=tokenizer)
    forward = flops.inference_flops(model, batch, tokenizer, batch_size=32)
    assert 2.5 < full / forward < 3.1  # backward is about twice the forward pass
    strategies.linear_probe(model)
    probe = flops.training_flops(model, batch, tokenizer=tokenizer)
    assert full / probe > 2.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_live_teacher_costs_its_forward_pass_and_a_cached_one_nothing(tokenizer, toy, tmp_path):
    teacher, student = make_tiny_model(seed=1), make_tiny_model(seed=2)
    batch = toy["train"].select(range(32))
    cached = distill.cache_teacher_logits(teacher, batch, tokenizer, cache_dir=tmp_path)
    labels_only = flops.training_flops(student, batch, tokenizer=tokenizer)
    from_cache = flops.training_flops(student, cached, distill.Distillation(None, alpha=1.0), tokenizer)
    live = flops.training_flops(student, batch, distill.Distillation(teacher, alpha=1.0), tokenizer)
    teacher_forward = flops.inference_flops(teacher, batch, tokenizer, batch_size=32)
    assert from_cache == labels_only
    assert live - labels_only == teacher_forward
