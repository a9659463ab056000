"""Elastic loader resume: the rest of the interrupted epoch is re-split over the new world, every sample
read exactly once (2 -> 1 and 1 -> 2 ranks, and a different num_workers), then the new split continues."""

from __future__ import annotations

import json
from itertools import islice

import pytest
from test_train_helpers import train_dataset  # noqa: F401

from synshot.data import make_loader
from synshot.data.loader import LoaderConfig


def _cfg(url, workers=0, **kw):
    return LoaderConfig(url=str(url), batch_size=1, num_workers=workers, views_per_sample=2, shuffle_buffer=4,
                        resampled=False, **kw)


def _keys(loader, n):
    return [k for b in islice(iter(loader), n) for k in b["key"]]


def _epoch_keys(url):
    loader = make_loader(_cfg(url, epochs=1))
    return sorted(k for b in loader for k in b["key"])


@pytest.mark.parametrize("old_world,new_world,old_workers,new_workers", [(2, 1, 0, 0), (1, 2, 0, 0), (2, 1, 0, 2)])
def test_interrupted_epoch_is_read_exactly_once(train_dataset, old_world, new_world, old_workers, new_workers):
    epoch = _epoch_keys(train_dataset)
    assert len(epoch) == 8
    seen: list[str] = []
    states = []
    for rank in range(old_world):
        loader = make_loader(_cfg(train_dataset, old_workers), rank, old_world)
        seen += _keys(loader, 3 - rank)  # ranks stop at different points, as after a real step
        states.append(json.loads(json.dumps(loader.state_dict())))  # through JSON, as in a checkpoint
    rest = len(epoch) - len(seen)
    news = []
    for rank in range(new_world):
        loader = make_loader(_cfg(train_dataset, new_workers), rank, new_world)
        summary = loader.load_elastic_state(states)
        assert summary["old_world"] == old_world and summary["resume_epoch"] == 1
        news.append(loader)
    rests_read = []
    for loader in news:
        n = loader.plan.num_workers
        for batch in islice(iter(loader), 3 * rest + 16):
            w = (loader._next_worker - 1) % n  # the logical worker that delivered this batch
            if loader._positions[w].leg < len(loader._legs[w]) - 1:  # read from a rest of an old stream
                rests_read += batch["key"]
    assert len(rests_read) == rest
    assert sorted(seen + rests_read) == epoch  # one epoch: nothing lost, nothing repeated
    # and a second elastic hop keeps working from the re-split state
    again = make_loader(_cfg(train_dataset), 0, 1)
    again.load_elastic_state([json.loads(json.dumps(ld.state_dict())) for ld in news])
    assert _keys(again, 2)


def test_elastic_state_must_come_from_the_same_data(train_dataset):
    loader = make_loader(_cfg(train_dataset), 0, 2)
    _keys(loader, 1)
    state = loader.state_dict()
    other = make_loader(_cfg(train_dataset, seed=5), 0, 1)
    with pytest.raises(ValueError, match="seed"):
        other.load_elastic_state([state, state])
    with pytest.raises(ValueError, match="ranks 0..1"):
        make_loader(_cfg(train_dataset), 0, 1).load_elastic_state([state])
