"""Retraining backends: gradients from onnxruntime-training, updates by masked numpy optimizers."""
