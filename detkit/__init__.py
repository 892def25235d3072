"""detkit: a small, readable PyTorch Lightning object-detection framework.

A one-stage RetinaNet and a two-stage Faster R-CNN built on one set of shared kernels in `detkit.ops`.
``detkit.load(checkpoint)`` gives a trained detector ready to predict (``detkit.inference``);
``detkit.export_onnx(checkpoint, path)`` writes it as an ONNX model that onnxruntime runs alone.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``detkit.load`` is ``detkit.inference.load`` and ``detkit.export_onnx`` is
    ``detkit.inference.export.export_onnx``, imported on first use: ``import detkit`` stays light."""
    if name == "load":
        from detkit.inference import load

        return load
    if name == "export_onnx":
        from detkit.inference.export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")
