"""Default training settings, importable without torch (``latentlab train --help`` reads them).

``DEFAULTS`` are the force-matching defaults and the settings every objective shares;
``OBJECTIVE_DEFAULTS[kind]`` the loop settings each objective is tuned for (a :class:`Trainer`
argument left at None takes them).  The dashboard takes its defaults from here too.
"""

DEFAULTS = {"epochs": 60, "lr": 2e-3, "batch_size": 256, "hidden": (128, 128, 128), "val_fraction": 0.1,
            "patience": 15, "n_blocks": 20, "lr_final_fraction": 0.05, "weight_decay": 0.0, "ema_decay": 0.995,
            "ensemble": 1, "support_prior": True, "refit": True, "holdout": 0.0}

OBJECTIVE_DEFAULTS = {
    "force-matching": {k: DEFAULTS[k] for k in ("epochs", "lr", "batch_size", "patience", "ema_decay", "refit",
                                                 "lr_final_fraction")},
    # V(Q, T): no weight average, no refit (as tuned on the alanine-dipeptide 300/350/400 K sets).
    "temperature-matching": {"epochs": 60, "lr": 2e-3, "batch_size": 256, "patience": 15, "ema_decay": 0.0,
                             "refit": False, "lr_final_fraction": 0.05},
    # One "epoch" is one parameter update; lr None = chosen by the estimator (see RelativeEntropy).
    "relative-entropy": {"epochs": 300, "lr": None, "batch_size": 4096, "patience": 30, "ema_decay": 0.0,
                         "refit": False, "lr_final_fraction": 0.1},
}
