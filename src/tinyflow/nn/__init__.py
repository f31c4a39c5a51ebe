"""PyTorch modules built from `tinyflow.arch` genomes. Importing this package imports torch."""
