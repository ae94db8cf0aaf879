"""Trained models put to use: inference-time simplification, ONNX/TorchScript export checked against the source
model, and prediction on image files."""
