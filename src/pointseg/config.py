"""Typed settings for training and experiments: YAML in, validated once, YAML out.

A config file is YAML whose sections mirror the classes below. ``extends: base.yaml`` (relative
to the file) starts from another config and deep-merges this file's keys over it.
``--set key=value`` overrides any
field by its dotted path (``--set optim.lr=0.001 --set data.val=[855]``); values are parsed as YAML.
Unknown keys and wrong types are errors that name the field, so a typo never passes silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from pointseg.choices import CropSampling, DatasetFormat, Norm, Overlap, Scale, TestTimeAugmentation, Tile
from pointseg.errors import PointsegError
from pointseg.points import ProtocolSettings


class Section(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataConfig(Section):
    """Where the data is and how it is split, cropped and batched."""

    format: DatasetFormat
    root: Path
    schema_file: Path | None = Field(
        None, alias="schema", description="class schema file; required for 'folder'"
    )
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_pattern: str = "{stem}"
    train: list[str] | None = Field(
        None, description="ids/groups to train on; default: all not in val or test"
    )
    val: list[str] = Field(default_factory=list, description="ids/groups (wildcards allowed) for validation")
    test: list[str] = Field(default_factory=list, description="ids/groups held out for `pointseg evaluate`")
    crop_size: int = Field(
        512, ge=32, multiple_of=32, description="training crops, read from disk as windows"
    )
    crops_per_image: int = Field(8, ge=1, description="random crops per training image per epoch")
    crop_sampling: CropSampling = Field(
        "uniform",
        description="where training crops fall: anywhere (uniform), each around a clicked point of a "
        "class drawn equally among the image's clicked classes (points), or half and half (mixed); "
        "dense supervision crops uniformly",
    )
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(2, ge=0)
    band_stats_images: int = Field(64, ge=1, description="training images used to estimate band mean/std")
    cache_mb: int = Field(1024, ge=0, description="per loader worker: decoded JPEG/PNG files kept in memory")


class ExpansionConfig(Section):
    """Superpixel expansion of the points (see :mod:`pointseg.label_expansion`); off with ``method: none``."""

    method: Literal["none", "slic", "felzenszwalb"] = "none"
    weight: float = Field(0.5, gt=0, le=1, description="loss weight of an expanded pixel (points: 1)")
    superpixel_size: int = Field(400, ge=1, description="pixels per superpixel aimed at")


class PointsConfig(Section, ProtocolSettings):
    """How sparse labels are made: simulated by a point protocol, or read from a folder or a points file.

    The protocol's settings and their ranges are those of :class:`~pointseg.points.ProtocolSettings`.
    ``directory`` and ``file`` replace the simulation (its settings are then unused) and exclude
    each other. With either, images need no dense mask; validation images without one are
    scored on held-out points (``holdout``, ``block_size``, see :mod:`pointseg.point_holdout`).
    ``expansion`` spreads each point over its superpixel for training; it is not part of the protocol.
    """

    directory: Path | None = Field(None, description="read <id>.tif/.png point maps from here instead")
    file: Path | None = Field(
        None, description="one .geojson/.csv/.gpkg of clicked points for all images, instead of simulation"
    )
    class_field: str = Field("class", min_length=1, description="attribute of `file` holding the class name")
    holdout: float = Field(
        0.2, ge=0, lt=1, description="share of the points held out when validation images have no mask"
    )
    block_size: int = Field(32, ge=1, description="side of the hold-out blocks, pixels")
    expansion: ExpansionConfig = Field(default_factory=ExpansionConfig)

    @model_validator(mode="after")
    def _one_source(self) -> PointsConfig:
        if self.directory is not None and self.file is not None:
            raise ValueError("give points.directory or points.file, not both")
        return self

    @property
    def given(self) -> bool:
        """Whether the points are read (from ``directory`` or ``file``) rather than simulated."""
        return self.directory is not None or self.file is not None


class ModelConfig(Section):
    """The network (see :func:`pointseg.models.build_model`)."""

    arch: Literal["deeplabv3plus", "deeplabv3"] = "deeplabv3plus"
    encoder: str = "resnet50"
    norm: Norm = "group"
    weights: str | None = Field(
        None, description="None, a local weights file, or a hub name such as 'imagenet'"
    )
    atrous_rates: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None,
        description="dilation rates of the ASPP module's three atrous branches; default smp's (12, 24, 36)",
    )
    output_stride: Literal[8, 16] | None = Field(
        None,
        description="the encoder's output stride (its last stages dilated instead of strided); "
        "default the architecture's: 16 for deeplabv3plus, 8 for deeplabv3",
    )


class LossConfig(Section):
    """The training loss: partial CE (``pce``), partial focal CE (``pfce``) or dense CE (``ce``).

    With ``propagation_weight`` above 0, that weight times :func:`pointseg.losses.propagation_loss`
    (neighbours of similar colour pushed to one class) is added; with ``consistency_weight`` above 0,
    that weight times :func:`pointseg.losses.confident_consistency_loss` between each crop and a
    strongly perturbed copy (:func:`pointseg.transforms.strongly_perturbed`) is added (without the
    class weights or the class balance, which weigh the labelled pixels only).
    """

    name: Literal["pce", "pfce", "ce"] = "pce"
    gamma: float = Field(2.0, ge=0)
    class_weights: list[float] | None = None
    class_balance: bool = Field(
        False, description="weigh every class present among a batch's labelled pixels the same"
    )
    propagation_weight: float = Field(0.0, ge=0, description="weight of the propagation loss; 0: off")
    propagation_radius: int = Field(2, ge=1, description="window radius of the propagation loss, pixels")
    propagation_sigma_colour: float = Field(0.5, gt=0, description="colour bandwidth, normalised band units")
    propagation_sigma_xy: float = Field(2.0, gt=0, description="spatial bandwidth, pixels")
    consistency_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the consistency loss: the model on a strongly perturbed copy of each crop "
        "learns the confident labels it predicts on the crop itself (FixMatch); 0: off",
    )
    consistency_threshold: float = Field(
        0.95, ge=0, le=1, description="confidence a pixel's prediction needs to teach the perturbed copy"
    )
    consistency_strength: float = Field(
        0.5, ge=0, le=1, description="colour gain/offset of the perturbed copy, normalised band units"
    )


class OptimConfig(Section):
    """Optimiser and learning-rate schedule."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    encoder_lr_scale: float = Field(
        1.0, gt=0, le=1, description="the encoder's learning rate as a share of `lr` (fine-tuning)"
    )
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="keep an exponential moving average of the weights with this decay per step "
        "(Lightning's EMAWeightAveraging): validated, saved and predicted with; 0: off",
    )
    schedule: Literal["none", "cosine", "poly", "plateau"] = "none"
    poly_power: float = 0.9
    plateau_patience: int = 5


class AugmentConfig(Section):
    """Batch augmentation (kornia), applied on the training device."""

    enabled: bool = True
    flips: bool = True
    rotate90: bool = True
    color_jitter: float = Field(0.1, ge=0, le=0.5, description="brightness/contrast/saturation strength")
    random_crop: float = Field(
        0.0, ge=0, le=0.5, description="max shift of a random crop, as a fraction of the side"
    )
    random_scale: float = Field(
        0.0, ge=0, le=1, description="max zoom s: each crop scaled by a factor in [1/(1+s), 1+s]; 0: off"
    )


class TrainerConfig(Section):
    """Settings passed to Lightning's Trainer."""

    max_epochs: int = Field(50, ge=1)
    max_steps: int = -1
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "32-true",
        description="auto: bf16-mixed where the device computes bfloat16 fast (a CUDA GPU with bfloat16, "
        "a CPU with AVX-512 or AMX), else 32-true",
    )
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    gradient_clip_val: float | None = 1.0
    early_stopping_patience: int | None = Field(None, ge=1, description="epochs without val mIoU gain")
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    deterministic: bool = False
    limit_train_batches: int | float | None = None


class EvalConfig(Section):
    """Sliding-window settings for validation and evaluation on whole images.

    ``tta`` and ``scales`` apply to every prediction of a trained model (test, ``evaluate``,
    ``predict``, self-training's pseudo-labels, the HTTP API), not to validation during training
    (``pointseg map`` and the labelling page train without them).
    """

    tile: Tile = 512
    overlap: Overlap = 0.25
    batch_size: int = Field(4, ge=1)
    tta: TestTimeAugmentation = Field(
        "none",
        description="flips: average the tile with its two mirrors (3x the inference time); "
        "d4: with its eight rotations and mirrors (8x)",
    )
    scales: tuple[Scale, ...] = Field(
        (1.0,),
        min_length=1,
        description="sizes each tile is predicted at, their class probabilities averaged (DeepLab's "
        "multi-scale evaluation): [1, 1.5] costs 1 + 1.5² = 3.25x the inference time, times the mirrors'",
    )


Probability = Annotated[float, Field(gt=0, le=1)]


class SelfTrainingConfig(Section):
    """Rounds of training on pseudo-labels after the training on points (see :mod:`pointseg.self_training`).

    ``selection: threshold`` keeps the pixels whose confidence (max softmax probability) is at
    least ``threshold`` (one value, or one per class); ``selection: top-share`` keeps, per class,
    the ``top_share`` most confident of the training pixels predicted as that class.
    """

    rounds: int = Field(0, ge=0, le=5, description="rounds of self-training; 0: off")
    selection: Literal["threshold", "top-share"] = "threshold"
    threshold: Probability | list[Probability] = Field(
        0.9, description="minimum confidence, or one per class"
    )
    top_share: Probability = Field(0.5, description="share of each class's predicted pixels kept")
    max_epochs: int | None = Field(None, ge=1, description="epochs per round; default trainer.max_epochs")


class TrainConfig(Section):
    """Everything a training run needs."""

    data: DataConfig
    supervision: Literal["dense", "points"] = "points"
    points: PointsConfig = Field(default_factory=PointsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    self_training: SelfTrainingConfig = Field(default_factory=SelfTrainingConfig)
    seed: int = 0
    output_dir: Path = Path("runs")
    run_name: str | None = None

    @model_validator(mode="after")
    def _dense_loss_needs_dense_labels(self) -> TrainConfig:
        if self.loss.name == "ce" and self.supervision == "points":
            raise ValueError(
                "loss 'ce' is dense cross-entropy; with supervision 'points' use 'pce' or 'pfce'"
            )
        if self.self_training.rounds and self.supervision == "dense":
            raise ValueError(
                "self_training.rounds > 0 needs supervision 'points' (dense masks leave no gaps)"
            )
        return self


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to nested config data.

    Raises:
        PointsegError: for an override without ``=``, or a value that is not valid YAML.
    """
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise PointsegError(f"--set '{override}': expected key=value, e.g. optim.lr=0.001")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PointsegError(f"--set '{override}': '{part}' is a value, not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            problem = str(getattr(error, "problem", None) or error).strip()
            raise PointsegError(f"--set '{override}': the value is not valid YAML ({problem})") from error
    return data


def parse_config(data: Any, source: str) -> TrainConfig:
    """Validate config data, turning pydantic's errors into one message that names each field.

    Raises:
        PointsegError: listing every invalid field with what was found and what was expected.
    """
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "(top level)"
            found = (
                f" (found {item['input']!r})"
                if "input" in item and not isinstance(item["input"], dict)
                else ""
            )
            lines.append(f"  {field}: {item['msg']}{found}")
        raise PointsegError(f"{source}: invalid config:\n" + "\n".join(lines)) from error


def read_config_data(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file as plain data, resolving ``extends`` chains.

    Raises:
        PointsegError: for a missing or unparsable file, a non-mapping, or a cycle of ``extends``.
    """
    if path.resolve() in seen:
        raise PointsegError(f"{path}: 'extends' forms a cycle: {' -> '.join(map(str, seen))}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise PointsegError(f"{path}: cannot read config ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise PointsegError(f"{path}: not UTF-8 text (byte {error.start}); expected a YAML config") from error
    except yaml.YAMLError as error:
        raise PointsegError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise PointsegError(f"{path}: a config is a YAML mapping of sections, found {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    return deep_merge(read_config_data(path.parent / str(base), (*seen, path.resolve())), data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override``'s keys merged in, recursively for nested mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (with ``extends``), apply ``--set`` overrides, validate.

    Relative paths in the config (data root, points directory, output folder) are relative to the
    working directory, as on the command line.

    Raises:
        PointsegError: for a missing or unparsable file, or invalid settings.
    """
    path = Path(path)
    return parse_config(apply_overrides(read_config_data(path), overrides or []), str(path))


def dump_config(config: TrainConfig) -> str:
    """Return the resolved config as YAML (the form a run folder keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)
