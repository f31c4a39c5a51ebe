"""Built-in cost models (config group `cost_model`): analytic, micronets."""
