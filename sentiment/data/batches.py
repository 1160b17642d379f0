"""Batches for training and prediction: encoded reviews as padded tensors, in a seeded order per epoch that a
resumed run repeats exactly, and raw reviews streamed from a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler

from sentiment.data.sources import iter_unlabelled
from sentiment.data.text import padded


class StoredArray:
    """A ``.npy`` file's array, read a few stretches at a time (``runs``) with plain file reads: never all in memory,
    and never mapped into it. (A memory-mapped cache looks bounded but is not: a few batches of random rows map large
    parts of it, a page cache's large folio or read-ahead's megabytes around each row, into the process.) Anything
    else reads the whole array (``np.asarray``). It pickles as its path: worker processes open the file themselves.

    Args:
        path: a ``.npy`` file (C order).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.shape, fortran_order, self.dtype = read(f)
            self.offset = f.tell()
        if fortran_order:
            raise ValueError(f"{path}: a Fortran-ordered array; expected C order")
        self.row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))  # bytes a row

    def __len__(self) -> int:
        return self.shape[0]

    def runs(self, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Rows ``starts[i]`` to ``starts[i] + sizes[i]`` for every ``i``, end to end; neighbouring stretches are read
        as one."""
        out = np.empty((int(sizes.sum()), *self.shape[1:]), dtype=self.dtype)
        keep = sizes > 0
        starts, sizes = starts[keep], sizes[keep]
        if not len(starts):
            return out
        apart = np.concatenate([[True], starts[1:] != starts[:-1] + sizes[:-1]])
        firsts = np.flatnonzero(apart)
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        at = 0
        with open(self.path, "rb", buffering=0) as f:
            for first, size in zip(starts[firsts].tolist(), np.add.reduceat(sizes, firsts).tolist()):
                f.seek(self.offset + first * self.row)
                end = at + size * self.row
                while at < end:  # a plain file reads whole; a pipe or network file may read less
                    at += f.readinto(buffer[at:end])
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.fromfile(self.path, dtype=self.dtype, offset=self.offset).reshape(self.shape)
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key):
        return np.asarray(self)[key]


def rows(array: np.ndarray | StoredArray, idx: np.ndarray) -> np.ndarray:
    """``array[idx]``, of an array or a ``StoredArray``."""
    return array.runs(idx, np.ones(len(idx), dtype=np.int64)) if isinstance(array, StoredArray) else array[idx]


def runs(array: np.ndarray | StoredArray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``StoredArray.runs``, of an array too."""
    if isinstance(array, StoredArray):
        return array.runs(starts, sizes)
    # each run's start, then one step per item: one indexing
    at = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(sizes.sum())
    return array[at]


class EncodedReviews(Dataset):
    """Encoded reviews as arrays (of the cache, read a batch at a time: ``StoredArray``); indexing a list of rows gives
    a batch.

    Args:
        ids: N x max_length token ids, right-padded with 0 (an array, or a ``StoredArray``).
        lengths: N real lengths.
        labels: N labels (1 = positive), or None.
        bags: each review's n-gram ids (``sentiment.data.bag``), end to end, and how many each has; or None.
    """

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray | None = None,
                 bags: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.ids, self.lengths, self.labels = ids, lengths, labels
        self.bags = None
        if bags is not None:
            flat, counts = bags
            self.bags = flat, np.asarray(counts, dtype=np.int64), np.concatenate([[0], np.cumsum(counts)[:-1]])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once, padded only to its longest review (DataLoader calls this directly)."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        width = max(1, int(lengths.max())) if len(idx) else 1
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(rows(self.ids, idx)[:, :width], dtype=np.int64)),
            "lengths": torch.from_numpy(lengths.astype(np.int64)),
        }
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[idx].astype(np.int64))
        if self.bags is not None:
            flat, counts, starts = self.bags
            sizes = counts[idx]
            batch["bag_ids"] = padded(runs(flat, starts[idx], sizes), sizes)
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def as_batch(batch):
    """``EncodedReviews`` already returns whole batches."""
    return batch


class EpochShuffle(RandomSampler):
    """A random order of the rows that depends only on ``seed`` and the epoch (Lightning calls ``set_epoch``).

    Nothing else draws from it, so a run resumed from a checkpoint sees the same batches in the same order
    as a run that was never stopped. An epoch is at least ``min_rows`` rows: a smaller training split is
    passed over several whole times, each pass in its own order. Under DDP, ``DistributedEpochShuffle``
    deals the same order out to the processes.
    """

    def __init__(self, data_source: Dataset, seed: int, min_rows: int = 0) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0
        self.passes = max(1, -(-min_rows // max(1, len(data_source))))

    def __len__(self) -> int:
        return len(self.data_source) * self.passes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.data_source)
        return iter(torch.cat([torch.randperm(n, generator=generator) for _ in range(self.passes)]).tolist())


class DistributedEpochShuffle(DistributedSampler):
    """``EpochShuffle``'s order, passes included, dealt out to ``num_replicas`` processes: this one takes every
    ``num_replicas``-th row from its ``rank`` on (the order padded with its own start to an equal share).

    Being a ``DistributedSampler``, Lightning keeps it instead of swapping in its own, which would know
    nothing of ``min_rows``.
    """

    def __init__(self, data_source: Dataset, seed: int, min_rows: int, num_replicas: int, rank: int) -> None:
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.order = EpochShuffle(data_source, seed, min_rows)
        self.num_samples = -(-len(self.order) // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        rows = list(self.order)
        rows += rows[: self.total_size - len(rows)]
        return iter(rows[self.rank : self.total_size : self.num_replicas])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position within an epoch Lightning saves in checkpoints and restores.

    It counts the batches it hands out; after ``load_state_dict`` its next pass skips the ones already
    trained on. With a sampler whose order depends only on the epoch (``EpochShuffle``, Lightning's
    ``DistributedSampler``), a run killed mid-epoch continues exactly where it stopped.
    """

    _batches = 0
    _skip = 0

    def __iter__(self) -> Iterator:
        self._batches, skip, self._skip = 0, self._skip, 0
        return self._counted(super().__iter__(), skip)

    def _counted(self, batches: Iterator, skip: int) -> Iterator:
        for batch in batches:
            self._batches += 1
            if self._batches > skip:
                yield batch

    @property
    def _order(self) -> EpochShuffle | None:
        """The sampler's own order, under DDP too (None for another sampler)."""
        order = getattr(self.sampler, "order", self.sampler)  # DistributedEpochShuffle deals out its ``order``
        return order if isinstance(order, EpochShuffle) else None

    def state_dict(self) -> dict[str, int]:
        state = {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._batches}
        if self._order is not None:
            state["seed"] = self._order.seed
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, self._skip = state["epoch"], state["batches"]
        if self._skip >= len(self):  # saved at the end of an epoch: the next one starts afresh
            epoch, self._skip = epoch + 1, 0
        if "seed" in state and self._order is not None:
            self._order.seed = state["seed"]
        if hasattr(self.sampler, "set_epoch"):  # Lightning sets it only after this pass has begun
            self.sampler.set_epoch(epoch)


class UnlabelledReviews(IterableDataset):
    """Streams raw reviews from a file in batches of ``batch_size``: ``text``, ``index`` (row, 0-based), ``id``.

    The texts stay raw: the model encodes them with the vocabulary it was trained with.
    """

    def __init__(self, path: str | Path, batch_size: int, text_column: str = "text", id_column: str = "id",
                 charset: str = "utf-8") -> None:
        self.path, self.batch_size = Path(path), batch_size
        self.text_column, self.id_column, self.charset = text_column, id_column, charset

    def __iter__(self) -> Iterator[dict]:
        start = 0
        for texts, ids in iter_unlabelled(self.path, self.text_column, self.id_column, self.batch_size, self.charset):
            batch = {"text": texts, "index": torch.arange(start, start + len(texts))}
            if ids is not None:
                batch["id"] = [str(i) for i in ids]
            start += len(texts)
            yield batch
