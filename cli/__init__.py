"""The `inq-onnx` command line: one small module per command over inq_onnx.api."""
