"""Executors: run a network IR (or an ExecutionPlan of it) in PyTorch, layer by layer or patch by patch."""

from tinyflow.execute.bind import bind, from_onnx, from_static, from_tflite
from tinyflow.execute.runner import Executor, max_abs_diff

__all__ = ["Executor", "bind", "from_onnx", "from_static", "from_tflite", "max_abs_diff"]
