"""Built-in trainer plugins: `standalone` (one fixed arch) and `ofa` (the once-for-all supernet)."""
