"""Deployment: ONNX export of a trained model (``export``), the predictor that runs the
export with onnxruntime alone (``runtime``), and, later, live features and the signal
service."""
