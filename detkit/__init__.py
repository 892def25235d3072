"""detkit: a small, readable PyTorch Lightning object-detection framework.

A one-stage RetinaNet and a two-stage Faster R-CNN built on one set of shared kernels in `detkit.ops`.
``detkit.load(checkpoint)`` gives a trained detector ready to predict (``detkit.inference``).
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``detkit.load`` is ``detkit.inference.load``, imported on first use: ``import detkit`` stays light."""
    if name == "load":
        from detkit.inference import load

        return load
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")
