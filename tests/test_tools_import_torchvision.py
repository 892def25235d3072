"""tools/import_torchvision.py: a torchvision state dict becomes a checkpoint whose detkit.load(...).predict gives
torchvision's own detections (torchvision is the oracle: same boxes within 1e-2 px, scores, labels + 1) on
images of several sizes; bad files are named with the first mismatching key, nothing half-written is left."""
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
import yaml
from torchvision_models import published_form, random_torchvision

import detkit
from detkit.inference.checkpoint import checkpoint_classes, read_checkpoint
from detkit.inference.cli import import_torchvision_command
from detkit.inference.config import RunConfig, input_settings
from detkit.inference.import_torchvision import ImportFailed, import_torchvision
from detkit.inference.predictor import Prediction

CHEAPEST = "fasterrcnn_mobilenet_v3_large_320_fpn"
IMAGE_SIZES = [(200, 90), (90, 200), (480, 640)]  # (h, w)


@pytest.fixture(scope="module")
def cheapest(tmp_path_factory):
    """(torchvision model, its weights file, the imported checkpoint) of the cheapest architecture."""
    folder = tmp_path_factory.mktemp("import")
    model = random_torchvision(CHEAPEST, calibrate=True)
    weights = folder / "weights.pth"
    torch.save(published_form(model), weights)
    out = folder / "model.ckpt"
    assert import_torchvision_command(["--arch", CHEAPEST, "--weights", str(weights), "--out", str(out)]) == 0
    return model, weights, out


def assert_same_detections(ours: Prediction, theirs: dict) -> None:
    """The same detections: each of ours has one of torchvision's, of its label + 1, within 1e-2 px on every
    coordinate and 1e-4 in score (near-tied scores, 1e-7 apart, may come in either order)."""
    assert len(ours.boxes) == len(theirs["boxes"]) > 0
    distance = torch.cdist(ours.boxes, theirs["boxes"], p=float("inf"))  # (D, D) largest coordinate difference
    distance[ours.labels[:, None] != theirs["labels"][None, :] - 1] = float("inf")
    nearest = distance.min(dim=1)
    assert float(nearest.values.max()) <= 1e-2
    assert len(set(nearest.indices.tolist())) == len(ours.boxes)  # one to one
    torch.testing.assert_close(ours.scores, theirs["scores"][nearest.indices], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.scores, theirs["scores"], atol=1e-4, rtol=0)  # the same order of scores


def images(sizes) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def torchvision_detections(model, arrays: list[np.ndarray]) -> list[dict]:
    with torch.no_grad():
        return [model([torch.from_numpy(array).permute(2, 0, 1).float() / 255])[0] for array in arrays]


def test_imported_checkpoint_predicts_what_torchvision_does(cheapest, one_thread):
    model, _, out = cheapest
    arrays = images(IMAGE_SIZES)
    predictions = detkit.load(out, device="cpu").predict(arrays, batch_size=1)
    for ours, theirs in zip(predictions, torchvision_detections(model, arrays)):
        assert_same_detections(ours, theirs)


def test_checkpoint_records_classes_config_and_torchvision_input(cheapest):
    _, _, out = cheapest
    contents = read_checkpoint(out)
    names, ids = checkpoint_classes(contents)
    assert len(names) == 90 and names[:3] == ["person", "bicycle", "car"] and names[11] == "N/A"
    assert ids == list(range(1, 91))  # COCO category id = label + 1
    config = RunConfig(yaml.safe_load(contents["detkit"]["config"]), "embedded", explicit=False)
    assert input_settings(config) == {"min_size": 320, "max_size": 640, "size_divisor": 32, "resize": "torchvision"}
    assert contents["detkit"]["imported_from"]["arch"] == CHEAPEST


def test_retinanet_import_predicts_what_torchvision_does(tmp_path, one_thread):
    arch = "retinanet_resnet50_fpn"
    model = random_torchvision(arch, seed=1, published_norms=False)  # BatchNorm2d: with num_batches_tracked
    state = model.state_dict()  # this time with num_batches_tracked (a state dict of a model built here)
    torch.save(state, tmp_path / "weights.pth")
    out = import_torchvision(arch, str(tmp_path / "weights.pth"), str(tmp_path / "model.ckpt"))
    arrays = images([(90, 60)])
    (ours,) = detkit.load(out, device="cpu").predict(arrays)
    assert_same_detections(ours, torchvision_detections(model, arrays)[0])


def test_a_file_of_another_architecture_is_named_with_its_first_mismatching_key(cheapest, tmp_path, capsys):
    _, weights, _ = cheapest
    out = tmp_path / "out.ckpt"
    assert import_torchvision_command(["--arch", "retinanet_resnet50_fpn", "--weights", str(weights),
                                       "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"error: {weights}: " in error and "retinanet_resnet50_fpn: key 'backbone.body.conv1.weight'" in error
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written, no temporary left


def test_a_state_dict_missing_keys_or_a_cut_file_is_named(cheapest, tmp_path):
    _, weights, _ = cheapest
    state = torch.load(weights, weights_only=True)
    last = list(state)[-1]
    del state[last]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ImportFailed, match=rf"partial.pth: .* key '{last}' is missing"):
        import_torchvision(CHEAPEST, str(tmp_path / "partial.pth"), str(tmp_path / "a.ckpt"))
    (tmp_path / "cut.pth").write_bytes(weights.read_bytes()[:100_000])
    with pytest.raises(ImportFailed, match=r"cut.pth: cannot be read as a PyTorch checkpoint; .*truncated"):
        import_torchvision(CHEAPEST, str(tmp_path / "cut.pth"), str(tmp_path / "a.ckpt"))
    with pytest.raises(ImportFailed, match=r"weights file not found: .*nowhere.pth"):
        import_torchvision(CHEAPEST, str(tmp_path / "nowhere.pth"), str(tmp_path / "a.ckpt"))
    assert not (tmp_path / "a.ckpt").exists()


def test_an_existing_out_is_kept_unless_force(cheapest, tmp_path):
    _, weights, _ = cheapest
    out = tmp_path / "model.ckpt"
    out.write_bytes(b"precious")
    with pytest.raises(ImportFailed, match=r"--out .*model.ckpt exists: pass --force"):
        import_torchvision(CHEAPEST, str(weights), str(out))
    assert out.read_bytes() == b"precious"
    import_torchvision(CHEAPEST, str(weights), str(out), force=True)
    assert checkpoint_classes(read_checkpoint(out))[0][0] == "person"


def test_default_weights_without_internet_say_so(monkeypatch, tmp_path):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)  # never download here
    with pytest.raises(ImportFailed, match=r"--weights DEFAULT: downloading https://download.pytorch.org/.*needs "
                                           r"internet.*pass --weights FILE"):
        import_torchvision(CHEAPEST, "DEFAULT", str(tmp_path / "model.ckpt"))
    assert not (tmp_path / "model.ckpt").exists()
