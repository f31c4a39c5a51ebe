"""Deployment: float ONNX export, int8 post-training quantization with onnxruntime, checks and latency.

The functions here know PyTorch, ONNX and onnxruntime but no plugin; the `onnxruntime` backend plugin and the
`quantize` / `deploy` stages call them.
"""
