"""Reducing one spectrum image to window counts per pixel and one summed spectrum.

Memory
    Each file is read one at a time and reduced at once to a few numbers per pixel (the
    counts in each energy window) and one spectrum. Read lazily (every file above
    :data:`~edxtomo.io.raw.EAGER_READ_MAX_BYTES` dense), a Velox spectrum stream is
    held as a sparse array of its counts and reduced in O(counts log counts), whatever the
    number of windows, and other formats are reduced chunk by chunk through dask: no large
    dense spectrum image, and no stack of them, is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _sparse_source(data: Any) -> Any:
    """The ``sparse.COO`` behind a dask array that only reads it, else None.

    rosettasciio's lazy Velox reader wraps the sparse array of a spectrum stream in
    ``dask.array.from_array`` (plus a dtype cast); dask then densifies it chunk by chunk.
    Reading the sparse array itself reduces it in O(counts) instead of O(pixels x
    channels). Any other graph returns None and goes through dask.
    """
    import sparse

    graph = getattr(data, "dask", None)
    if graph is None or not hasattr(graph, "layers"):
        return None
    if not all(name.startswith(("original-array-", "array-", "astype-")) for name in graph.layers):
        return None
    sources = [task for task in graph.values() if isinstance(task, sparse.COO)]
    if len(sources) == 1 and sources[0].shape == tuple(data.shape):
        return sources[0]
    return None


def _dense(block: Any) -> np.ndarray:
    """A dask block as a numpy array (sparse blocks densified: one chunk at a time)."""
    return block.todense() if hasattr(block, "todense") else np.asarray(block)


def reduce_spectrum_image(
    data: Any, channel_ranges: Sequence[tuple[int, int]]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Counts per pixel in channel ranges, and the spectrum summed over pixels.

    Parameters
    ----------
    data : ndarray, dask array or sparse-backed dask array, shape (..., n_channel)
        A spectrum image; leading axes are pixels (and frames).
    channel_ranges : sequence of (int, int)
        Channel ranges ``[start, stop)``.

    Returns
    -------
    sums : list of ndarray
        For each range, int64 counts of shape ``data.shape[:-1]``.
    spectrum : ndarray, shape (n_channel,)
        int64 counts summed over every leading axis.
    """
    nav_shape = tuple(data.shape[:-1])
    coo = _sparse_source(data)
    if coo is not None:
        *nav, channel = coo.coords
        # Sorted by channel once, each range is one slice: O(counts) over all ranges.
        order = np.argsort(channel, kind="stable")
        channel = channel[order]
        pixel = np.ravel_multi_index(tuple(nav), nav_shape)[order]
        weights = np.asarray(coo.data, dtype=np.float64)[order]  # exact below 2**53
        n_pixel = int(np.prod(nav_shape))
        sums = []
        for start, stop in channel_ranges:
            low, high = np.searchsorted(channel, [start, stop])
            counts = np.bincount(pixel[low:high], weights=weights[low:high], minlength=n_pixel)
            sums.append(np.rint(counts).astype(np.int64).reshape(nav_shape))
        spectrum = np.bincount(channel, weights=weights, minlength=data.shape[-1])
        return sums, np.rint(spectrum).astype(np.int64)
    import dask
    import dask.array as da

    if isinstance(data, da.Array):
        data = data.map_blocks(_dense, dtype=data.dtype)
    lazy_sums = [data[..., start:stop].sum(axis=-1, dtype=np.int64)
                 for start, stop in channel_ranges]
    lazy_spectrum = data.sum(axis=tuple(range(data.ndim - 1)), dtype=np.int64)
    *sums, spectrum = dask.compute(*lazy_sums, lazy_spectrum)
    return [np.asarray(s, dtype=np.int64) for s in sums], np.asarray(spectrum, dtype=np.int64)
