"""What a dataset adapter provides: how to find a format's samples, its classes, its split lists."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pointseg.datasets.samples import Discovery, SampleRef
from pointseg.errors import PointsegError
from pointseg.schema import ClassSchema


@dataclass(frozen=True)
class DiscoveryOptions:
    """What the caller tells an adapter's ``discover``.

    Attributes:
        schema: The class schema (the built-in one unless the caller gave another).
        require_masks: Report images without masks as problems.
        images_dir: Generic folders: subfolder of images.
        masks_dir: Generic folders: subfolder of masks.
        mask_pattern: Generic folders: mask stem for an image stem, e.g. ``"{stem}_mask"``.
    """

    schema: ClassSchema
    require_masks: bool = True
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_pattern: str = "{stem}"


SplitLists = Callable[[Path, set[str]], dict[str, set[str]]]
"""``(root, sample ids found) -> {split name: sample ids}`` for the lists a dataset ships."""


@dataclass(frozen=True)
class DatasetAdapter:
    """One dataset format.

    Attributes:
        discover: ``(root, options) -> Discovery``: pair the folder's files into samples.
        schema: The format's built-in class schema, or ``None`` when the user must give one.
        split_lists: For datasets that ship train/val/test lists: read them (see
            :data:`SplitLists`); ``None`` otherwise.
    """

    discover: Callable[[Path, DiscoveryOptions], Discovery]
    schema: ClassSchema | None = None
    split_lists: SplitLists | None = None

    @property
    def ships_split_lists(self) -> bool:
        """Whether the dataset ships train/val/test lists (so ``--split test`` selects its test set)."""
        return self.split_lists is not None

    def read_split_lists(self, root: Path, refs: list[SampleRef]) -> dict[str, set[str]]:
        """The dataset's own split lists over ``refs`` (empty for a format without lists)."""
        if self.split_lists is None:
            return {}
        return self.split_lists(root, {ref.id for ref in refs})

    def select_split(self, discovery: Discovery, split: str) -> list[SampleRef]:
        """The samples of ``discovery`` listed in the dataset's ``split`` list.

        Raises:
            PointsegError: if the dataset has no such list.
        """
        lists = self.read_split_lists(discovery.root, discovery.refs)
        if split not in lists:
            raise PointsegError(
                f"{discovery.root}: split '{split}' requested but {discovery.root / (split + '.txt')} "
                "does not exist"
            )
        return [ref for ref in discovery.refs if ref.id in lists[split]]
