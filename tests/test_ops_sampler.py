"""detkit.ops.BalancedSampler: exact counts, never the ignored, seeded draws equal torchvision's sampler."""
import pytest
import torch
from torchvision.models.detection import _utils as tv_utils

from detkit.ops import BalancedSampler

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def matched_indices(num_positive: int, num_negative: int, num_ignored: int, seed: int) -> torch.Tensor:
    """(N,) int64 in the Matcher's encoding, shuffled: gt indices 0..4, -1 background, -2 ignored."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.cat([torch.randint(0, 5, (num_positive,), generator=generator),
                        torch.full((num_negative,), -1), torch.full((num_ignored,), -2)])
    return values[torch.randperm(len(values), generator=generator)]


@pytest.mark.parametrize("num_positive, num_negative, expected_positive, expected_negative", [
    (100, 1000, 64, 192),  # plenty of both: 256 * 0.25 = 64 positives, 192 negatives
    (10, 1000, 10, 246),  # few positives: all of them, negatives fill up to 256
    (100, 50, 64, 50),  # few negatives: all of them, the batch stays short of 256
    (0, 1000, 0, 256),  # an image without objects
    (0, 0, 0, 0),  # only ignored anchors
])
def test_counts(num_positive, num_negative, expected_positive, expected_negative):
    matched = matched_indices(num_positive, num_negative, 300, seed=0)
    (positive,), (negative,) = BalancedSampler(256, 0.25)([matched])
    assert positive.dtype == torch.bool and positive.shape == matched.shape
    assert int(positive.sum()) == expected_positive and int(negative.sum()) == expected_negative
    assert (matched[positive] >= 0).all() and (matched[negative] == -1).all()  # -2 is never sampled
    assert not (positive & negative).any()


def test_floor_of_the_positive_share():
    matched = matched_indices(50, 50, 0, seed=1)
    (positive,), (negative,) = BalancedSampler(10, 0.33)([matched])  # floor(3.3) = 3
    assert int(positive.sum()) == 3 and int(negative.sum()) == 7


def test_several_images_and_an_empty_one():
    images = [matched_indices(5, 20, 3, seed=2), torch.zeros(0, dtype=torch.int64), matched_indices(40, 2, 1, seed=3)]
    positives, negatives = BalancedSampler(16, 0.5)(images)
    assert [int(p.sum()) for p in positives] == [5, 0, 8]
    assert [int(n.sum()) for n in negatives] == [11, 0, 2]
    assert [len(p) for p in positives] == [28, 0, 43]


def test_seeded_draws_equal_torchvision_sampler():
    """torchvision encodes positives as >= 1, negatives 0, ignored -1; with the same seed both draw alike."""
    images = [matched_indices(30, 500, 40, seed=4), matched_indices(200, 300, 10, seed=5)]
    torch.manual_seed(123)
    positives, negatives = BalancedSampler(128, 0.25)(images)
    torch.manual_seed(123)
    labels = [torch.where(m >= 0, 1, torch.where(m == -1, 0, -1)) for m in images]
    expected_positives, expected_negatives = tv_utils.BalancedPositiveNegativeSampler(128, 0.25)(labels)
    for ours, theirs in zip(positives + negatives, expected_positives + expected_negatives):
        assert torch.equal(ours, theirs.bool())


def test_draws_are_uniform_not_a_prefix():
    matched = matched_indices(10, 10, 0, seed=6)
    sampler = BalancedSampler(4, 0.5)
    torch.manual_seed(0)
    counts = sum(torch.stack(sampler([matched])[0]).sum(0) for _ in range(400))  # (N,) times each was drawn
    assert (counts[matched >= 0] > 40).all()  # each positive drawn about 400 * 2 / 10 = 80 times
    assert (counts[matched < 0] == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedSampler(0, 0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedSampler(256, 1.5)


@requires_cuda
def test_cuda_counts():
    matched = matched_indices(100, 1000, 300, seed=7).cuda()
    (positive,), (negative,) = BalancedSampler(256, 0.25)([matched])
    assert positive.is_cuda and int(positive.sum()) == 64 and int(negative.sum()) == 192
    assert (matched[positive] >= 0).all() and (matched[negative] == -1).all()
