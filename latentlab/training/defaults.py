"""Defaults of :func:`latentlab.training.train_force_matching`, importable without torch.

``latentlab train --help`` shows them; the CLI imports this module (not the trainer) so that
building the parser stays fast.
"""

DEFAULTS = {"epochs": 60, "lr": 2e-3, "batch_size": 256, "hidden": (128, 128, 128), "val_fraction": 0.1,
            "patience": 15, "n_blocks": 20, "lr_final_fraction": 0.05, "weight_decay": 0.0, "ema_decay": 0.995,
            "ensemble": 1, "support_prior": True}
