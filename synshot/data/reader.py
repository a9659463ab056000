"""Raw shard reading: a tar stream from any URL -> raw samples (``{"__key__", "__url__", member: bytes}``).

Why a small reader of our own over webdataset's tar iterator: the loader needs every shard's items
in a deterministic order, with read failures (truncated, missing, garbage shards) turned into
countable :class:`ShardFailure` items instead of exceptions that end the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from webdataset.tariterators import base_plus_ext, tar_file_iterator

from synshot.data import storage


@dataclass(frozen=True)
class ShardFailure:
    """A shard (or its tail) could not be read; stands in the item stream where the failure happened."""

    url: str
    message: str
    lost: int = 1  # samples of the manifest this failure cost (>= 1): the corruption threshold counts samples


def iter_shard(
    url: str, storage_options: Mapping[str, Any] | None = None, expected_samples: int | None = None
) -> Iterator[dict[str, Any] | ShardFailure]:
    """Yield the raw samples of one shard in file order; a read error yields one :class:`ShardFailure` last.

    The failure carries how many of the manifest's ``expected_samples`` were lost, so a missing shard
    of 500 samples weighs 500 in the loader's corruption threshold, not 1.

    A sample cut by truncation is yielded as it is (missing members); decoding then rejects it. A tar
    cut at a member boundary ends without any error in stream mode, so ``expected_samples`` (from the
    manifest) turns a short count into a :class:`ShardFailure` too.
    """
    try:
        stream = storage.open_url(url, "rb", storage_options)
    except Exception as exc:  # missing object, refused connection, bad credentials...
        yield ShardFailure(url, f"cannot open: {type(exc).__name__}: {exc}", _lost(expected_samples, 0))
        return
    current: dict[str, Any] | None = None
    count = 0
    try:
        with stream:
            for member in tar_file_iterator(stream):
                prefix, suffix = base_plus_ext(member["fname"])
                if prefix is None:
                    continue
                if current is None or current["__key__"] != prefix:
                    if current is not None:
                        count += 1
                        yield current
                    current = {"__key__": prefix, "__url__": url}
                current[suffix.lower()] = member["data"]
    except Exception as exc:  # noqa: BLE001 - tarfile, OS, HTTP/S3 client errors: all mean "this shard's tail is unreadable"
        if current is not None:  # a partial last sample: decoding rejects (and counts) it
            count += 1
            yield current
        yield ShardFailure(url, f"read error: {type(exc).__name__}: {str(exc).split(' @ ')[0]}",
                           _lost(expected_samples, count))
        return
    if current is not None:
        count += 1
        yield current
    if expected_samples is not None and count != expected_samples:
        yield ShardFailure(url, f"holds {count} samples but the manifest says {expected_samples} (truncated or replaced shard)",
                           _lost(expected_samples, count))


def _lost(expected: int | None, delivered: int) -> int:
    """Samples a shard failure cost: the manifest's count minus those delivered (at least 1)."""
    return max(1, (expected or 0) - delivered)
