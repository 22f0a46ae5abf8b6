"""Data sources that retraining and validation read batch by batch: the sample count, the labels and the shape of a
sample are known up front; inputs are read (decoded, checked) only when a batch asks for them.

Three kinds: a Dataset (arrays in memory, an .npz), an ImageFolder (images on disk) and an IterableSource (input
dicts from Python, read again for every pass). The first two read any sample at any time, so that shuffling is
exact: a permutation of all samples per epoch. An IterableSource reads its samples in the order they come and
shuffles them within a window of SHUFFLE_BATCHES batches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from abc import ABC, abstractmethod
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from .errors import DataError

__all__ = ["Batch", "DataSource", "IterableSource", "Examples", "SHUFFLE_BATCHES"]

# An IterableSource is shuffled within a window of this many batches (memory: the window plus one batch as read).
SHUFFLE_BATCHES = 8


class Batch(NamedTuple):
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None


class DataSource(ABC):
    """Samples with a known count and labels (or None); their inputs are read a batch at a time.

    Subclasses read any sample on demand (`take`), or override `batches`, `head` and `select` to read in order.
    """

    labels: np.ndarray | None

    @abstractmethod
    def __len__(self) -> int:
        ...

    @abstractmethod
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's shape without the batch axis."""

    @abstractmethod
    def dtypes(self) -> dict[str, np.dtype]:
        """Each input's dtype."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A SHA-256 (hex) that changes when the data does: what a checkpoint records of it."""

    def take(self, index: np.ndarray | slice) -> Batch:
        """The samples at `index`, in that order."""
        raise NotImplementedError(f"{type(self).__name__} reads its samples in order only")

    def batches(self, batch_size: int, rng: np.random.Generator | None = None, endless: bool = False
                ) -> Iterator[Batch]:
        """One pass in batches of `batch_size` (the last may be short): in order, or in an order `rng` draws.

        `endless`: pass after pass, each drawn anew, in full batches (a batch may hold the end of one pass and the
        start of the next); the caller stops when it has read enough.
        """
        count = len(self)
        if not endless:
            order = rng.permutation(count) if rng is not None else None
            for start in range(0, count, batch_size):
                yield self.take(order[start:start + batch_size] if order is not None
                                else slice(start, min(start + batch_size, count)))
            return
        pending = np.empty(0, dtype=np.int64)
        while True:
            order = np.concatenate([pending, rng.permutation(count) if rng is not None else np.arange(count)])
            full = len(order) - len(order) % batch_size
            for start in range(0, full, batch_size):
                yield self.take(order[start:start + batch_size])
            pending = order[full:]

    def head(self, count: int) -> Batch:
        """The first `count` samples (all of them when there are fewer)."""
        return self.take(slice(0, min(count, len(self))))

    def select(self, index: np.ndarray, batch_size: int) -> Iterator[Batch]:
        """The samples at the ascending positions `index`, in batches of `batch_size`."""
        for start in range(0, len(index), batch_size):
            yield self.take(index[start:start + batch_size])


def batch_size_of(batch: Batch) -> int:
    return len(next(iter(batch.inputs.values())))


def _index(batch: Batch, index) -> Batch:
    return Batch({name: array[index] for name, array in batch.inputs.items()},
                 None if batch.labels is None else batch.labels[index])


def _concat(parts: Sequence[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return Batch({name: np.concatenate([p.inputs[name] for p in parts]) for name in parts[0].inputs},
                 None if parts[0].labels is None else np.concatenate([p.labels for p in parts]))


def _rebatched(chunks: Iterable[Batch], size: int) -> Iterator[Batch]:
    """The samples of `chunks` (any sizes) in batches of `size`; the last one holds what is left."""
    parts: list[Batch] = []
    held = 0
    for chunk in chunks:
        parts.append(chunk)
        held += batch_size_of(chunk)
        if held < size:
            continue
        merged, start = _concat(parts), 0
        while held - start >= size:
            yield _index(merged, slice(start, start + size))
            start += size
        parts, held = ([_index(merged, slice(start, held))] if start < held else []), held - start
    if held:
        yield _concat(parts)


def _shuffled(chunks: Iterable[Batch], batch_size: int, window: int, rng: np.random.Generator) -> Iterator[Batch]:
    """The samples of `chunks` in batches drawn at random from a window of at least `window` samples read ahead;
    what is left at the end comes in a random order."""
    held: Batch | None = None
    for chunk in chunks:
        held = chunk if held is None else _concat([held, chunk])
        while batch_size_of(held) >= window:
            count = batch_size_of(held)
            pick = rng.choice(count, batch_size, replace=False)
            keep = np.ones(count, dtype=bool)
            keep[pick] = False
            yield _index(held, pick)
            held = _index(held, keep)
    if held is not None:
        order = rng.permutation(batch_size_of(held))
        for start in range(0, len(order), batch_size):
            yield _index(held, order[start:start + batch_size])


class IterableSource(DataSource):
    """Input dicts from Python, read anew for every pass: `open_pass()` gives a fresh iterable of them, and
    `fit(item, position)` checks one against the model (a Batch, or DataError).

    A first pass, when the source is made, counts the samples, collects the labels and hashes the data (the
    fingerprint); later passes must give the same number of samples in the same shapes.
    """

    def __init__(self, open_pass: Callable[[], Iterable], fit: Callable[[object, int], Batch]):
        self._open, self._fit = open_pass, fit
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._dtypes: dict[str, np.dtype] = {}
        self._labeled: bool | None = None
        hashes = {}
        labels: list[np.ndarray] = []
        count = 0
        for batch in self._read():
            for name, array in sorted(batch.inputs.items()):
                hashes.setdefault(name, hashlib.sha256()).update(np.ascontiguousarray(array).tobytes())
            if batch.labels is not None:
                hashes.setdefault("labels", hashlib.sha256()).update(batch.labels.tobytes())
                labels.append(batch.labels)
            count += batch_size_of(batch)
        if not count:
            raise DataError("the data yielded no batches")
        self._count = count
        self.labels = np.concatenate(labels) if labels else None
        described = {"count": count, "shapes": {k: list(v) for k, v in self._shapes.items()},
                     "dtypes": {k: v.str for k, v in self._dtypes.items()},
                     "sha256": {k: h.hexdigest() for k, h in sorted(hashes.items())}}
        self._fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    def __len__(self) -> int:
        return self._count

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, np.dtype]:
        return dict(self._dtypes)

    def fingerprint(self) -> str:
        return self._fingerprint

    def _read(self) -> Iterator[Batch]:
        """One pass, each item checked, in the shapes and with the labels (or none) of the first."""
        for position, item in enumerate(self._open()):
            batch = self._fit(item, position)
            shapes = {name: array.shape[1:] for name, array in batch.inputs.items()}
            if self._shapes is None:
                self._shapes, self._labeled = shapes, batch.labels is not None
                self._dtypes = {name: array.dtype for name, array in batch.inputs.items()}
            elif shapes != self._shapes:
                raise DataError(f"batch {position}: samples of shapes {shapes}, the first batch's {self._shapes}: "
                                f"every sample needs the same shape")
            if (batch.labels is not None) != self._labeled:
                raise DataError(f"batch {position} {'has' if batch.labels is not None else 'lacks'} labels, the "
                                f"first batch {'has' if self._labeled else 'lacks'} them")
            yield batch

    def _pass(self) -> Iterator[Batch]:
        """A whole pass, which must give as many samples as the first."""
        count = 0
        for batch in self._read():
            count += batch_size_of(batch)
            yield batch
        if count != self._count:
            raise DataError(f"the data gave {count} samples in this pass and {self._count} in the first: it must give "
                            f"the same samples every time it is read")

    def batches(self, batch_size: int, rng: np.random.Generator | None = None, endless: bool = False
                ) -> Iterator[Batch]:
        passes = (self._pass() for _ in (itertools.count() if endless else range(1)))
        if rng is not None:
            window = SHUFFLE_BATCHES * batch_size
            passes = (_shuffled(one, batch_size, window, rng) for one in passes)
        return _rebatched(itertools.chain.from_iterable(passes), batch_size)

    def head(self, count: int) -> Batch:
        parts, held = [], 0
        for batch in self._read():
            parts.append(_index(batch, slice(0, count - held)))
            held += batch_size_of(parts[-1])
            if held >= count:
                break
        return _concat(parts)

    def select(self, index: np.ndarray, batch_size: int) -> Iterator[Batch]:
        def picked():
            offset = 0
            for batch in self._read():
                size = batch_size_of(batch)
                low, high = np.searchsorted(index, [offset, offset + size])
                if high > low:
                    yield _index(batch, index[low:high] - offset)
                offset += size
                if high == len(index):
                    return

        return _rebatched(picked(), batch_size)


class Examples:
    """Training examples: a source's inputs with their labels, or with a teacher's outputs (distillation),
    computed batch by batch."""

    def __init__(self, source: DataSource,
                 teacher: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]] | None = None):
        if teacher is None and source.labels is None:
            raise DataError("training on labels needs 'labels' in the data")
        self.source, self.teacher = source, teacher

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, rng: np.random.Generator, endless: bool = False
                ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | list[np.ndarray]]]:
        """(inputs, targets) pairs, as DataSource.batches orders them."""
        for batch in self.source.batches(batch_size, rng, endless):
            yield batch.inputs, self.teacher(batch.inputs) if self.teacher is not None else batch.labels
