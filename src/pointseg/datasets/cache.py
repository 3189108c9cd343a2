"""A per-process cache of whole decoded JPEG/PNG files, bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

STREAM_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Formats whose windows can only be read by decoding the file from its start."""


class DecodedRasterCache:
    """Whole decoded JPEG/PNG images and masks, least recently used first out, bounded in bytes.

    Random training crops of a JPEG re-decode most of the file each time (about 50-100 ms for a
    2448² DeepGlobe image), so each process (each DataLoader worker) keeps decoded files while
    they fit. GeoTIFFs are read by window and never cached.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, Path], np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, Path], load: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``key``, loading (and maybe caching) it on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        array = load()
        if array.nbytes <= self.max_bytes:
            self._items[key] = array
            self._bytes += array.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
        return array
