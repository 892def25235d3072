"""A training loader that a resumed run continues mid-epoch, batch for batch.

Lightning saves the state of a loader that has ``state_dict`` / ``load_state_dict`` in every checkpoint and
hands it back before the resumed epoch starts. The order itself comes from a ``DistributedSampler``, in one
process too: its permutation is a function of (seed, epoch) alone, so the resumed epoch is the same shuffle,
and one and N processes see the same global batches.
"""
from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose state is (epoch, batches already handed out this epoch).

    After ``load_state_dict`` the next iteration sets the sampler to the saved epoch and skips the batches
    already trained on without loading their images. Lightning's prefetching does not skew the count: a loader
    with a length is not prefetched.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._batches_out = 0
        self._skip = 0

    def state_dict(self) -> dict:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": self._batches_out}

    def load_state_dict(self, state_dict: dict) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(state_dict["epoch"])
        self._skip = int(state_dict["batches"])

    def __iter__(self):
        skip, self._skip = self._skip, 0
        self._batches_out = skip
        for batch in (self._remaining_batches(skip) if skip else super().__iter__()):
            self._batches_out += 1
            yield batch

    def _remaining_batches(self, skip: int):
        """The epoch's batches after the first ``skip``, through a one-off loader over the remaining index lists."""
        batches = list(self.batch_sampler)[skip:]
        return iter(DataLoader(
            self.dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=self.collate_fn,
            pin_memory=self.pin_memory, worker_init_fn=self.worker_init_fn, generator=self.generator))
