"""Files that make a class map read with class names in GIS software.

Beside a ``<stem>_classes.tif`` written by :mod:`pointseg.prediction`, this module writes:

- the class names inside the GeoTIFF, as the band metadata item ``CLASS_NAMES`` (a JSON list; set
  with :func:`class_name_tags` before the file is written, read back with
  :func:`read_class_names_tag` or ``rasterio``'s ``tags(1)``);
- ``<stem>_classes.tif.aux.xml``: GDAL's PAM side file with the band's category names and a raster
  attribute table (value, class, red, green, blue), which GDAL, QGIS and ArcGIS read as the legend;
- ``<stem>_classes.qml``: a QGIS paletted style with each class's name and colour;
- ``<stem>_classes.gpkg`` (optional): the map as class polygons in the raster's CRS, regions smaller
  than a minimum mapping unit merged into their neighbours first.

Every file is written atomically.
"""

from __future__ import annotations

import json
import struct
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
from rasterio.features import shapes, sieve

from pointseg.raster import atomic_output, open_raster, read_pixels
from pointseg.schema import IGNORE_INDEX, ClassSchema

CLASS_NAMES_TAG = "CLASS_NAMES"
"""Band metadata item holding the class names of a label raster, as a JSON list."""


def class_name_tags(schema: ClassSchema) -> dict[str, str]:
    """Band metadata naming the classes of a label raster (``tags(1)`` in rasterio)."""
    return {CLASS_NAMES_TAG: json.dumps(list(schema.classes))}


def read_class_names_tag(path: str | Path) -> list[str] | None:
    """Class names stored in a label raster's band metadata, or ``None`` if it has none."""
    with open_raster(path) as dataset:
        value = dataset.tags(1).get(CLASS_NAMES_TAG)
    return None if value is None else list(json.loads(value))


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def write_category_side_file(raster: str | Path, schema: ClassSchema) -> Path:
    """Write ``<raster>.aux.xml``: category names and a raster attribute table for band 1.

    GDAL reads the file whenever it opens the raster (``gdalinfo`` lists the categories and the
    table); QGIS and ArcGIS show the class names in the legend.

    Returns:
        The side file's path.
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in schema.classes:
        ET.SubElement(categories, "Category").text = name
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    columns = (
        ("Value", "1", "5"),
        ("Class", "2", "2"),
        ("Red", "0", "6"),
        ("Green", "0", "7"),
        ("Blue", "0", "8"),
    )
    for index, (name, kind, usage) in enumerate(columns):
        field = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = kind
        ET.SubElement(field, "Usage").text = usage
    for label, (name, color) in enumerate(zip(schema.classes, schema.colors, strict=True)):
        row = ET.SubElement(table, "Row", index=str(label))
        for value in (label, name, *color):
            ET.SubElement(row, "F").text = str(value)
    side_file = Path(f"{raster}.aux.xml")
    ET.indent(root)
    with atomic_output(side_file) as temporary:
        ET.ElementTree(root).write(temporary, encoding="UTF-8", xml_declaration=False)
    return side_file


def write_qgis_style(path: str | Path, schema: ClassSchema) -> Path:
    """Write a QGIS layer style (``.qml``): a paletted renderer with each class's name and colour.

    QGIS applies ``<stem>.qml`` automatically to ``<stem>.tif`` when it sits beside it; it can also
    be loaded with *Layer Properties > Style > Load Style*. Nodata (``IGNORE_INDEX``) stays
    transparent.
    """
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for label, (name, color) in enumerate(zip(schema.classes, schema.colors, strict=True)):
        ET.SubElement(palette, "paletteEntry", value=str(label), color=_hex(color), alpha="255", label=name)
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            + ET.tostring(root, "unicode")
            + "\n"
        )
    return path


def _polygon_wkb(rings: list[Any]) -> bytes:
    """Little-endian WKB of a GeoJSON-style polygon (a list of rings of ``(x, y)`` positions)."""
    parts = [struct.pack("<BII", 1, 3, len(rings))]
    for ring in rings:
        parts.append(struct.pack("<I", len(ring)))
        parts.append(np.asarray(ring, dtype="<f8").tobytes())
    return b"".join(parts)


def _ring_area(ring: list[Any]) -> float:
    """Area enclosed by a closed ring of ``(x, y)`` positions (shoelace formula)."""
    xy = np.asarray(ring, dtype=np.float64)
    return 0.5 * abs(float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1])))


def write_class_polygons(raster: str | Path, path: str | Path, schema: ClassSchema, min_area: int = 0) -> int:
    """Write a label raster's classes as polygons into a GeoPackage (layer ``classes``).

    Args:
        raster: Single-band label raster (``IGNORE_INDEX`` = nodata), e.g. ``<stem>_classes.tif``.
        path: The ``.gpkg`` to write.
        schema: Class names of the labels.
        min_area: Minimum mapping unit in pixels: smaller regions are first merged into their
            largest neighbour (``rasterio.features.sieve``, 4-connected); 0 or 1 keeps every pixel.

    Returns:
        The number of polygons written. Each has the fields ``class_index``, ``class`` and
        ``area_px``, and lies in the raster's CRS (pixel coordinates if it has none).
    """
    with open_raster(raster) as dataset:
        labels = read_pixels(dataset)[0]
        transform, crs = dataset.transform, dataset.crs
    valid = labels != IGNORE_INDEX
    if min_area > 1:
        labels = sieve(labels, size=min_area, connectivity=4, mask=valid)
    geometries: list[bytes] = []
    indices: list[int] = []
    areas: list[int] = []
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    for geometry, value in shapes(labels, mask=labels != IGNORE_INDEX, connectivity=4, transform=transform):
        rings = geometry["coordinates"]
        geometries.append(_polygon_wkb(rings))
        indices.append(int(value))
        area = _ring_area(rings[0]) - sum(_ring_area(ring) for ring in rings[1:])
        areas.append(round(area / pixel_area))
    path = Path(path)
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # pixel coordinates: no CRS
        temporary.unlink()  # GDAL's GeoPackage driver refuses to create over an existing (empty) file
        pyogrio.raw.write(
            temporary,
            geometry=np.array(geometries, dtype=object),
            field_data=[
                np.array(indices, dtype=np.int32),
                np.array([schema.classes[i] for i in indices], dtype=object),
                np.array(areas, dtype=np.int64),
            ],
            fields=["class_index", "class", "area_px"],
            layer="classes",
            driver="GPKG",
            geometry_type="Polygon",
            crs=crs.to_wkt() if crs is not None else None,
        )
    return len(geometries)
