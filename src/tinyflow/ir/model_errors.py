"""Errors of the model importers (ONNX, TFLite): one paragraph naming the file, the node and the fix."""

from __future__ import annotations

from tinyflow.errors import TinyflowError


class ModelImportError(TinyflowError):
    """A model file cannot be imported (not a model, truncated, an unsupported op or shape, a broken graph)."""


class UnsupportedOpError(ModelImportError):
    """The file holds an op the importer does not read (`op`); the pipeline may fall back to the description."""

    def __init__(self, message: str, op: str):
        super().__init__(message)
        self.op = op
