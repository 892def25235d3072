"""Loading a trained detector from its checkpoint alone and predicting with it (``detkit.load``).

Checkpoints are read with ``torch.load(weights_only=True)``; a bad one raises ``CheckpointError`` naming the file.
"""
from detkit.inference.checkpoint import CheckpointError
from detkit.inference.images import expand_image_paths, read_image
from detkit.inference.predictor import Detector, Prediction, load

__all__ = ["CheckpointError", "Detector", "Prediction", "expand_image_paths", "load", "read_image"]
