"""Training pieces shared by the trainers and the `finetune` stage (imports torch). A trained supernet is used through
`tinyflow.supernet`.

- `evaluation`: accuracy of a model over a loader.
- `optim`: SGD / AdamW with no weight decay on norms and biases; cosine schedule with linear warm-up.
- `checkpoint`: atomic `save_checkpoint`, `load_checkpoint` (CheckpointError on a corrupt file), `AtomicCheckpointIO`
  for Lightning, `load_weights` (CheckpointError on an arch mismatch), and the one model checkpoint reader
  (`read_model` / `load_model`: weights + the `DeployedNetwork` that `save_model` records in `model.pt`).
- `cache`: the content-addressed train cache (a trainer's `TrainResult` and its checkpoint, by key).
- `callbacks`: `TrackerCallback`, forwarding per-epoch Lightning metrics to the active tracker (MLflow).
- `lightning`: `make_trainer`, a `pl.Trainer` with tinyflow's defaults (CPU, progress bar, no logger, atomic IO).
- `classifier`: `Recipe`, `ClassifierModule` and `train_classifier` — the standalone / fine-tuning recipe.
"""
