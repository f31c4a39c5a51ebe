"""Search strategy plugins: `evolution` (MCUNet/OFA), `random` (the baseline), `optuna` (NSGA-II)."""
