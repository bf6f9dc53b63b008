"""Freezing, gradual unfreezing, layer-wise learning rates and the regularisers."""
from __future__ import annotations

import pytest
import torch

from xdlearn import strategies, train
from conftest import make_tiny_model


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_layer_groups_cover_every_parameter_once_bottom_to_top(tiny_model):
    groups = strategies.layer_groups(tiny_model)
    assert len(groups) == 1 + 2 + 1  # embeddings, 2 layers, head
    ids = [id(p) for g in groups for p in g]
    assert sorted(ids) == sorted(id(p) for p in tiny_model.parameters())
    head = {n for n, p in tiny_model.named_parameters() if any(p is q for q in groups[-1])}
    assert head == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}


def test_linear_probe_and_freeze(tiny_model):
    strategies.linear_probe(tiny_model)
    assert trainable_names(tiny_model) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                           "classifier.weight", "classifier.bias"}
    strategies.freeze(tiny_model, embeddings=True, layers=1)
    names = trainable_names(tiny_model)
    assert not any(n.startswith(("bert.embeddings", "bert.encoder.layer.0.")) for n in names)
    assert any(n.startswith("bert.encoder.layer.1.") for n in names)


def test_frozen_weights_do_not_move_during_fit(tiny_model, tokenizer, toy):
    strategies.freeze(tiny_model, embeddings=True, layers=1)
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, lr=1e-3, progress=False)
    for name, p in tiny_model.named_parameters():
        moved = not torch.equal(before[name], p)
        assert moved == p.requires_grad, name


def test_gradual_unfreezing_wakes_one_group_at_a_time(tiny_model, tokenizer, toy):
    schedule = strategies.GradualUnfreezing(tiny_model, every=3)
    counts = []
    class Watch:
        def on_step(self, history):
            counts.append(schedule.trainable)
        def on_epoch(self, history):
            pass
    train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, batch_size=16, progress=False,
              unfreezing=schedule, monitor=Watch())
    assert counts[0] < counts[3] < counts[6] < counts[9] == counts[-1]
    assert counts[-1] == sum(p.numel() for p in tiny_model.parameters())


def test_layerwise_learning_rates_decay_downward(tiny_model):
    groups = strategies.layerwise_lr_groups(tiny_model, lr=1e-3, decay=0.5)
    by_param = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert by_param[id(tiny_model.classifier.weight)] == pytest.approx(1e-3)
    assert by_param[id(tiny_model.bert.encoder.layer[1].output.dense.weight)] == pytest.approx(5e-4)
    assert by_param[id(tiny_model.bert.encoder.layer[0].output.dense.weight)] == pytest.approx(2.5e-4)
    assert by_param[id(tiny_model.bert.embeddings.word_embeddings.weight)] == pytest.approx(1.25e-4)
    assert all(g["weight_decay"] == 0 for g in groups if g["params"][0].ndim < 2)
    assert len(by_param) == len(list(tiny_model.parameters()))


def test_regularisers_by_hand():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    assert strategies.L1(0.1)(model).item() == pytest.approx(0.1 * 3.5)
    assert strategies.L2(0.1)(model).item() == pytest.approx(0.05 * (1 + 4 + 0.25))


def test_squared_distance_matches_autograd_without_keeping_a_copy():
    w = torch.randn(4, 3, requires_grad=True)
    a = torch.randn(4, 3)
    strategies.squared_distance(w, a).backward()
    mine = w.grad.clone()
    w.grad = None
    ((w - a) ** 2).sum().backward()
    assert torch.allclose(mine, w.grad) and torch.allclose(mine, 2 * (w - a).detach())
    w.grad = None
    strategies.squared_distance(w).backward()
    assert torch.allclose(w.grad, 2 * w.detach())


def test_l2sp_anchor_uses_the_unchanged_model_in_place(tiny_model):
    import copy
    anchor = copy.deepcopy(tiny_model)
    penalty = strategies.L2SP(tiny_model, alpha=1.0, beta=0.0, anchor=anchor)
    weight = anchor.bert.encoder.layer[0].output.dense.weight
    assert any(t.data_ptr() == weight.data_ptr() for t in penalty.start.values())  # no clone
    assert penalty(tiny_model).item() == 0.0
    with torch.no_grad():
        tiny_model.bert.encoder.layer[0].output.dense.weight.add_(0.1)
    assert penalty(tiny_model).item() == pytest.approx(0.5 * weight.numel() * 0.01, rel=1e-4)
    with pytest.raises(ValueError, match="same architecture"):
        strategies.L2SP(tiny_model, anchor=torch.nn.Linear(2, 2))


def test_l2sp_is_zero_at_the_start_and_pulls_back_toward_it(tiny_model, tokenizer, toy):
    penalty = strategies.L2SP(tiny_model, alpha=1.0, beta=0.0)
    assert penalty(tiny_model).item() == 0.0
    with torch.no_grad():
        tiny_model.bert.encoder.layer[0].output.dense.weight.add_(0.1)
        tiny_model.classifier.weight.add_(5.0)  # the head is not pulled toward its random start
    n = tiny_model.bert.encoder.layer[0].output.dense.weight.numel()
    assert penalty(tiny_model).item() == pytest.approx(0.5 * n * 0.01, rel=1e-4)
    # fine-tuning with a strong L2-SP stays nearer the start than without
    def distance(model, reference):
        return sum(((p - reference.state_dict()[n]) ** 2).sum().item() for n, p in model.named_parameters()
                   if n.startswith("bert.encoder"))
    start = make_tiny_model()
    free, held = make_tiny_model(), make_tiny_model()
    settings = dict(tokenizer=tokenizer, epochs=1, lr=3e-3, progress=False)
    train.fit(free, toy["train"], **settings)
    train.fit(held, toy["train"], regularizers=[strategies.L2SP(held, alpha=50.0)], **settings)
    assert distance(held, start) < 0.5 * distance(free, start)


def test_set_dropout(tiny_model):
    assert strategies.set_dropout(tiny_model, 0.3) > 0
    assert all(m.p == 0.3 for m in tiny_model.modules() if isinstance(m, torch.nn.Dropout))


def test_exact_zeros_counts_only_exact_zeros_of_the_penalised_weights(tiny_model):
    weights = strategies.penalised_weights(tiny_model)
    assert all(p.ndim > 1 for p in weights) and all(p is not tiny_model.classifier.bias for p in weights)
    before = strategies.exact_zeros(tiny_model)
    assert before["weights"] == sum(p.numel() for p in weights)
    with torch.no_grad():
        tiny_model.classifier.weight[0, :5] = 0.0
        tiny_model.classifier.weight[1, :3] = 1e-30  # tiny is not zero
        tiny_model.classifier.bias.zero_()           # a bias is not penalised
    assert strategies.exact_zeros(tiny_model)["zeros"] == before["zeros"] + 5
    strategies.linear_probe(tiny_model)              # frozen weights are not penalised either
    assert strategies.exact_zeros(tiny_model)["weights"] < before["weights"]


def test_drift_measures_how_far_the_layers_moved(tiny_model):
    import copy
    anchor = copy.deepcopy(tiny_model)
    assert strategies.drift(tiny_model, anchor) == 0.0
    weight = tiny_model.bert.encoder.layer[0].output.dense.weight
    with torch.no_grad():
        weight.add_(0.1)
        tiny_model.classifier.weight.add_(5.0)       # the head is not a transformer layer
    assert strategies.drift(tiny_model, anchor) == pytest.approx((weight.numel() * 0.01) ** 0.5, rel=1e-4)
    shallower = copy.deepcopy(anchor)
    del shallower.bert.encoder.layer[1]
    with pytest.raises(ValueError, match="same architecture"):
        strategies.drift(tiny_model, shallower)


def test_freezing_an_mpnet_freezes_the_position_bias_every_layer_reads():
    """MPNet's relative-position bias sits beside the layers and feeds each: left trainable, every frozen layer would
    stay in the backward pass. It belongs to the bottom group, and no gradient reaches the frozen layers."""
    from transformers import MPNetConfig, MPNetForSequenceClassification
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(MPNetConfig(vocab_size=300, hidden_size=32, num_hidden_layers=4,
                                                       num_attention_heads=2, intermediate_size=64, num_labels=2))
    bias = model.mpnet.encoder.relative_attention_bias.weight
    groups = strategies.layer_groups(model)
    assert any(p is bias for p in groups[0]) and not any(p is bias for g in groups[1:] for p in g)
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters())
    strategies.freeze(model, layers=2)
    assert not bias.requires_grad and model.classifier.dense.weight.requires_grad
    ids = torch.randint(3, 300, (2, 7))
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
    assert [h.requires_grad for h in hidden] == [False, False, False, True, True]   # embeddings, layers 0-3
