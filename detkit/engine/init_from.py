"""``model.init_from``: start a new training from the weights of another checkpoint (an imported torchvision model
or a detkit run), loading every tensor whose name and shape match and leaving the rest as the detector built them.

Unlike ``--resume`` nothing else is taken: no optimizer, schedule, step count or budget. The anchor geometry
(``base_sizes``, ``scales``, ``aspect_ratios``, ``fitted``) stays the run's config's, so anchors marked "auto" are
fitted to the new data. Layers whose shape depends on the number of classes (RetinaNet's ``cls_logits``, Faster
R-CNN's ``cls_score`` and ``bbox_pred``) differ in shape when the classes do, and keep the detector's fresh
initialisation (RetinaNet's classifier bias at the prior probability, as its head sets it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from detkit.engine.anchor_check import dense_stages
from detkit.inference.checkpoint import CheckpointError, checkpoint_classes, detector_state_dict, read_checkpoint

NAMED = 3  # names shown per group in the printout


class InitFromError(CheckpointError):
    """``model.init_from`` names a file that cannot initialise the detector; the message names the file."""


@dataclass
class InitReport:
    """What ``load_matching_weights`` did, by detector state-dict key."""

    path: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # in both, of another shape: the fresh init kept
    not_in_file: list[str] = field(default_factory=list)  # the detector's, absent from the file: fresh init kept
    left_out: list[str] = field(default_factory=list)  # the file's, unknown to the detector
    anchors: list[str] = field(default_factory=list)  # anchor geometry: the run's config's, never the file's
    class_note: str = ""

    def summary(self) -> str:
        """Counts and a few names per group, one line each."""
        lines = [f"model.init_from {self.path}:"]
        for title, keys in (("loaded", self.loaded), ("re-initialised (other shape in the file)", self.reinitialised),
                            ("initialised fresh (not in the file)", self.not_in_file),
                            ("left out (the file's, unknown to this detector)", self.left_out),
                            ("anchor buffers kept from this run's config", self.anchors)):
            names = f": {', '.join(keys[:NAMED])}{', ...' if len(keys) > NAMED else ''}" if keys else ""
            lines.append(f"  {title}: {len(keys)}{names}")
        return "\n".join(lines + ([f"  {self.class_note}"] if self.class_note else []))


def anchor_buffer_keys(detector: nn.Module) -> set[str]:
    """State-dict keys of the anchor geometry of every dense stage (``detkit.models.dense.DenseAnchorStage``)."""
    return {f"{name}.{buffer}" for name, stage in dense_stages(detector) for buffer, _ in stage.named_buffers()}


def load_matching_weights(detector: nn.Module, path: str, class_names: list[str] | None = None) -> InitReport:
    """Load into ``detector`` every tensor of the checkpoint ``path`` whose key and shape match, anchors excepted.

    ``class_names`` (the run's, by label) only words the report when the file's classes differ. InitFromError
    naming the file when it cannot be read, is not a detkit checkpoint, or matches no tensor of the detector.
    """
    try:
        contents = read_checkpoint(path)
    except CheckpointError as error:
        raise InitFromError(f"model.init_from: {error}") from None
    state, own = detector_state_dict(contents), detector.state_dict()
    report = InitReport(path=path, anchors=sorted(anchor_buffer_keys(detector) & set(own)))
    for key, tensor in own.items():
        if key in report.anchors:
            continue
        if key not in state:
            report.not_in_file.append(key)
        elif state[key].shape != tensor.shape:
            report.reinitialised.append(f"{key} {tuple(state[key].shape)} -> {tuple(tensor.shape)}")
        else:
            report.loaded.append(key)
    # BatchNorm's step counts, which no forward pass reads, have no place in a frozen-BN detector: not worth a line
    report.left_out = [key for key in state if key not in own and not key.endswith("num_batches_tracked")]
    if not report.loaded:
        raise InitFromError(f"model.init_from: {path}: no tensor matches this detector ({type(detector).__name__}) "
                            f"in name and shape: another architecture (the file's first keys: {list(state)[:NAMED]}, "
                            f"the detector's: {list(own)[:NAMED]})")
    with torch.no_grad():
        detector.load_state_dict({key: state[key] for key in report.loaded}, strict=False)
    report.class_note = _class_note(checkpoint_classes(contents), class_names, bool(report.reinitialised))
    return report


def _class_note(recorded: tuple[list[str], list[int]] | None, class_names: list[str] | None, reshaped: bool) -> str:
    if recorded is None or class_names is None or recorded[0] == list(class_names):
        return ""
    trained = recorded[0]
    if len(trained) != len(class_names) and reshaped:
        return f"classes: {len(trained)} in the file, {len(class_names)} here: the class layers start fresh"
    return (f"warning: the file's {len(trained)} classes differ from this run's {len(class_names)} but the class "
            f"layers have the same shape, so they were loaded: label i starts as the file's class i")
