"""Datasets by name, and seeded batch orders that shard a global batch over DDP ranks.

The order of an epoch depends only on (seed, epoch): a run resumed mid-epoch replays the same batches,
and N ranks together see exactly the global batches one process would (rank r takes items r, r + N, ...
of each), so a DDP run and a single process follow the same loss curve.
"""
from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .fashion_mnist import FashionMNIST, check_fashion_mnist
from .imagenet import check_imagenet, imagenet1k, imagenet21k

# dataset name -> the reader of one split (a class or factory taking split= and the reader's options)
DATASET_READERS = {"fashion_mnist": FashionMNIST, "imagenet1k": imagenet1k, "imagenet21k": imagenet21k}


def build_dataset(name: str, split: str = "train", **opts) -> Dataset:
    """The dataset `name` (a key of DATASET_READERS) for `split`; `opts` go to its reader."""
    if name not in DATASET_READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASET_READERS)}")
    return DATASET_READERS[name](split=split, **opts)


def check_data(name: str, root=None) -> None:
    """Raise a clear error when dataset `name` is not readable from `root` (its default location when None):
    the files and folders its reader needs, without reading the images."""
    if name not in DATASET_READERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASET_READERS)}")
    if name == "fashion_mnist":
        check_fashion_mnist(root)
    else:
        check_imagenet(root, name.removeprefix("imagenet"))


class ShardedBatchSampler(Sampler[List[int]]):
    """This rank's share of each global batch of `batch_size` items of a dataset of `n` items.

    shuffle: a permutation drawn from a generator seeded with (seed, epoch), else 0..n-1.
    `start` skips that many batches of the epoch (resuming mid-epoch). Training uses drop_last=True so
    every global batch is full and splits evenly over the ranks. Without it (evaluation) a last global batch
    smaller than the number of ranks leaves some ranks no item: they skip that batch rather than yield an
    empty one (which a DataLoader cannot collate), so a rank may see one batch fewer than len().
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False):
        if batch_size % world_size:
            raise ValueError(f"global batch size {batch_size} does not split over {world_size} ranks; "
                             f"expected a multiple of {world_size}")
        if drop_last and n < batch_size:
            raise ValueError(f"{n} items make no full batch of {batch_size}; lower data.batch_size or add data")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for b in range(self.start, len(self)):
            mine = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world_size].tolist()
            if mine:
                yield mine


def iterate(dataset: Dataset, sampler: ShardedBatchSampler, num_workers: int = 0, pin_memory: bool = False):
    """Batches (images, labels) in `sampler`'s order: one `dataset.batch(indices)` call for in-memory
    datasets (Fashion-MNIST), else a DataLoader with `num_workers` workers."""
    if hasattr(dataset, "batch"):
        return (dataset.batch(idx) for idx in sampler)
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory))
