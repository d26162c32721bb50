"""Inference: preprocessing, the onnxruntime runner and the adapters that turn outputs into views."""
