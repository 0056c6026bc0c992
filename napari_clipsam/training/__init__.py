"""Training and evaluation of the UMCI head (method §2 and §4), Qt-free and usable from scripts.

- :mod:`.losses`: focal and dice losses of the two-class anomaly map.
- :mod:`.trainer`: :func:`~.trainer.train_umci`, the training loop (frozen CLIP, cached features,
  checkpoints every epoch, exact resume).
- :mod:`.evaluation`: :func:`~.evaluation.evaluate_dataset`, the published-protocol evaluation of the rough
  and final maps.
- :mod:`.resize`: squashing maps and masks to the CLIP input size.

Importing this package does not import torch; the submodules do.
"""
