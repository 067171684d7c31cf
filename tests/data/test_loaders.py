"""Seeded, sharded batch orders: every rank's share of every global batch, and nothing empty."""
import pytest
import torch
from torch.utils.data import TensorDataset

from quadranet.data.loaders import ShardedBatchSampler, iterate


@pytest.mark.parametrize("n, batch, world", [(5, 4, 4), (65, 32, 2), (64, 32, 2), (7, 8, 8), (10, 3, 1)])
def test_eval_shards_cover_every_item_once_and_none_is_empty(n, batch, world):
    shards = [list(ShardedBatchSampler(n, batch, shuffle=False, rank=r, world_size=world)) for r in range(world)]
    items = sorted(i for shard in shards for b in shard for i in b)
    assert items == list(range(n))
    assert all(b for shard in shards for b in shard)


def test_a_rank_left_without_items_in_the_last_batch_iterates_a_dataloader():
    """5 items in global batches of 4 over 4 ranks: rank 3's share of the last batch is empty (it crashed
    DataLoader's collate with an IndexError, as an ImageNet evaluation on 8 GPUs would have)."""
    data = TensorDataset(torch.arange(5.0)[:, None], torch.arange(5))
    sampler = ShardedBatchSampler(5, 4, shuffle=False, rank=3, world_size=4)
    assert [y.tolist() for _, y in iterate(data, sampler)] == [[3]]


def test_training_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    def epoch(seed, e, start=0):
        s = ShardedBatchSampler(20, 4, shuffle=True, seed=seed, drop_last=True)
        s.set_epoch(e, start)
        return list(s)

    assert epoch(0, 1) == epoch(0, 1) != epoch(0, 2) != epoch(1, 1)
    assert epoch(0, 1, start=2) == epoch(0, 1)[2:]
    ranks = [ShardedBatchSampler(20, 4, shuffle=True, rank=r, world_size=2, drop_last=True) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    whole = epoch(0, 1)
    assert [sorted(a + b) for a, b in zip(*map(list, ranks))] == [sorted(b) for b in whole]
