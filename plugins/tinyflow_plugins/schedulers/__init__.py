"""Built-in schedulers (config group `scheduler`): layer, patch, rnnpool."""
