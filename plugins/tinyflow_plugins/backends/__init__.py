"""Backends: export and check the final model for a runtime (`onnxruntime`: ONNX files checked on the host)."""
