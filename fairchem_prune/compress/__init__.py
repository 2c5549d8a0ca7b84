"""``fairchem-prune compress``: from a pre-trained checkpoint to the fastest model whose error on the
user's task stays within a budget of the full model's.

Host-independent parts: :mod:`.budget` (the budget and the rule that picks), :mod:`.workdir` (block
counts, the settings of a working folder), :mod:`.report` (rows, ``compress.json``, ``report.md``, the
Pareto plot). The pipelines: :mod:`.pipeline` beside fairchem-core 1.x (with :mod:`.configs`, its
fine-tuning configs), :mod:`fairchem_prune.fairchem2.compress` beside 2.x.
"""
