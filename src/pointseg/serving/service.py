"""The model a worker process serves: loaded once, then one prediction or preview per job.

The methods block (they run the network), so :mod:`pointseg.serving.jobs` runs them in a worker
thread; each takes the request's :class:`~pointseg.serving.jobs.JobBudget` and checks it between
tiles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi.responses import JSONResponse, Response

from pointseg.checkpoint import TrainedModel, load_trained_model
from pointseg.colors import display_rgb
from pointseg.inference import LabelSink, RasterSource, SlidingWindowPredictor, torch_forward
from pointseg.raster import read_pixels
from pointseg.serving import outputs
from pointseg.serving.jobs import JobBudget
from pointseg.serving.settings import ServeSettings
from pointseg.serving.uploads import Upload, open_upload

OutputFormat = Literal["png", "geotiff", "json"]


@dataclass
class ModelService:
    """A loaded model and its sliding-window predictor."""

    trained: TrainedModel
    predictor: SlidingWindowPredictor
    settings: ServeSettings

    @classmethod
    def load(cls, settings: ServeSettings) -> ModelService:
        """Load the checkpoint and, if ``settings.warmup``, run one tile through the network."""
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        if settings.checkpoint is None:
            raise ValueError("ModelService.load needs settings with a checkpoint")
        trained = load_trained_model(settings.checkpoint, settings.device)
        evaluation = trained.config.eval
        forward = torch_forward(
            trained.model, settings.device, settings.precision, evaluation.tta, evaluation.scales
        )
        predictor = SlidingWindowPredictor(
            forward,
            trained.num_classes,
            evaluation.tile,
            evaluation.overlap,
            settings.batch_size,
            settings.device,
        )
        if settings.warmup:
            predictor.forward(torch.zeros(1, trained.band_stats.num_bands, predictor.tile, predictor.tile))
        return cls(trained, predictor, settings)

    def metadata(self) -> dict[str, Any]:
        """The ``GET /model`` body."""
        limits = {
            "max_upload_bytes": self.settings.max_upload_bytes,
            "max_pixels": self.settings.max_pixels,
            "request_timeout_s": self.settings.request_timeout,
        }
        return {**self.trained.metadata(), "limits": limits}

    def predict(self, upload: Upload, output_format: OutputFormat, budget: JobBudget) -> Response:
        """Predict every pixel of an upload and encode the class map as ``output_format``.

        Pixels that the input marks as nodata (a nodata value, a mask band, or a value that is not
        finite) become ``IGNORE_INDEX``: transparent in the PNG, nodata in the GeoTIFF, left out
        of the shares.

        Raises:
            JobError: when ``budget`` stops the prediction between tiles.
        """
        schema = self.trained.schema
        with open_upload(upload, self.settings.max_pixels) as dataset:
            source = RasterSource(dataset, self.trained.band_stats)
            sink = LabelSink(source.height, source.width, valid=source.valid)
            self.predictor.predict(source, sink, on_tiles=budget.check)
            labels = sink.labels
            crs, transform = (dataset.crs, dataset.transform) if dataset.crs is not None else (None, None)
        shares = outputs.class_shares(labels, schema)
        if output_format == "png":
            return Response(
                outputs.encode_mask_png(labels, schema),
                media_type="image/png",
                headers={"X-Pointseg-Shares": outputs.shares_header(shares)},
            )
        if output_format == "geotiff":
            attachment = f'attachment; filename="{upload.stem}_classes.tif"'
            return Response(
                outputs.encode_label_geotiff(labels, schema, crs, transform),
                media_type="image/tiff",
                headers={"Content-Disposition": attachment},
            )
        height, width = labels.shape
        return JSONResponse(
            {
                "width": width,
                "height": height,
                "classes": [dataclasses.asdict(share) for share in shares],
                "model": self.metadata(),
            }
        )

    def preview(self, upload: Upload, budget: JobBudget) -> Response:
        """An RGB PNG of an upload's bands 1-3 (one or two bands: band 1 as grey), 2-98 % stretched."""
        with open_upload(upload, self.settings.max_pixels) as dataset:
            pixels = read_pixels(dataset)
        budget.check()
        return Response(outputs.encode_png(display_rgb(pixels)), media_type="image/png")
