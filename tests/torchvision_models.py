"""torchvision detectors with random weights, as oracles for the import and fine-tuning tests."""
import torch
import torchvision


def random_torchvision(arch: str, seed: int = 0) -> torch.nn.Module:
    """torchvision's ``arch`` with random weights, its classifier spread so that it detects something (a fresh
    one scores every class about equally, below the 0.05 threshold) and few scores tie."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None).eval()
    classifier = (model.head.classification_head.cls_logits if hasattr(model, "head")
                  else model.roi_heads.box_predictor.cls_score)
    with torch.no_grad():
        classifier.bias.normal_(-1.0, 1.0 if hasattr(model, "head") else 3.0)
        classifier.weight.normal_(0.0, 0.05)
    return model


def published_form(model: torch.nn.Module) -> dict:
    """The state dict as torchvision publishes its files: without BatchNorm's ``num_batches_tracked``."""
    return {key: value for key, value in model.state_dict().items() if not key.endswith("num_batches_tracked")}
