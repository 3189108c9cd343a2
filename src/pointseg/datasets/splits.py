"""Splitting a dataset's samples into train, val and test, by the config or the dataset's own lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pointseg.datasets.registry import dataset_adapter, discover_dataset
from pointseg.datasets.samples import SampleRef, select_refs
from pointseg.errors import PointsegError
from pointseg.schema import ClassSchema

if TYPE_CHECKING:
    from pointseg.config import DataConfig


def split_samples(
    data: DataConfig, require_masks: bool = True
) -> tuple[ClassSchema, dict[str, list[SampleRef]]]:
    """Pair the dataset's files and split them into ``train``, ``val`` and ``test``.

    ``val`` and ``test`` select ids or groups (tiles, source images); ``train`` is everything else
    unless given. A dataset that ships split lists (LandCover.ai's ``train/val/test.txt``) uses
    them when none of the three is given.

    Args:
        data: The data settings.
        require_masks: Fail for images without a dense mask, and for an empty ``val``. Without,
            images may have no mask (their labels are points) and ``val`` may be empty (the
            caller then validates on points held out of the training images).

    Raises:
        PointsegError: if a pattern matches nothing, splits overlap, or train (or, with
            ``require_masks``, val) is empty.
    """
    discovery = discover_dataset(
        data.format,
        data.root,
        data.schema_file,
        images_dir=data.images_dir,
        masks_dir=data.masks_dir,
        mask_pattern=data.mask_pattern,
        require_masks=require_masks,
    )
    refs = discovery.require_usable()
    lists = dataset_adapter(data.format).read_split_lists(discovery.root, refs)
    if lists and data.train is None and not data.val and not data.test:
        splits = {
            name: [ref for ref in refs if ref.id in lists.get(name, set())]
            for name in ("train", "val", "test")
        }
    else:
        val = select_refs(refs, data.val, "data.val")
        test = select_refs(refs, data.test, "data.test")
        held_out = {ref.id for ref in val + test}
        overlap = {ref.id for ref in val} & {ref.id for ref in test}
        if overlap:
            raise PointsegError(f"data.val and data.test share samples: {sorted(overlap)[:5]}")
        if data.train is not None:
            train = select_refs(refs, data.train, "data.train")
            leaked = {ref.id for ref in train} & held_out
            if leaked:
                raise PointsegError(f"data.train includes held-out samples: {sorted(leaked)[:5]}")
        else:
            train = [ref for ref in refs if ref.id not in held_out]
        splits = {"train": train, "val": val, "test": test}
    if not splits["train"]:
        raise PointsegError(f"{data.root}: no training samples left after taking out val and test")
    if not splits["val"] and require_masks:
        raise PointsegError("data.val is empty: name the ids or groups to validate on (e.g. data.val=[855])")
    return discovery.schema, splits
