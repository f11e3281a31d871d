"""ONNX exports: the writer (tf2onnx), the fused recurrent ops, and the onnxruntime runtime."""
