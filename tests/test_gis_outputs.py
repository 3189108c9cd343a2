import ctypes
import xml.etree.ElementTree as ET
from pathlib import Path

import pyogrio
import rasterio
from affine import Affine
from rasterio.crs import CRS

from fake_data import block_labels
from pointseg.gis_outputs import (
    read_class_names_tag,
    write_category_side_file,
    write_class_polygons,
    write_qgis_style,
)
from pointseg.raster import write_label_raster
from pointseg.schema import IGNORE_INDEX, ClassSchema

SCHEMA = ClassSchema("t", ("water", "forest", "urban"), ((0, 0, 255), (0, 128, 0), (200, 0, 0)), "index")
CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5000000)


def gdal_category_names(path: Path) -> tuple[list[str], int]:
    """Category names and attribute-table rows as GDAL itself reads them, like ``gdalinfo``.

    Through GDAL's C API, from the library rasterio bundles. GDAL's GeoTIFF driver loads the
    side file on the first metadata or attribute-table request, so ask for the table first, as
    ``gdalinfo`` and QGIS do.
    """
    libraries = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob("libgdal*"))
    gdal = ctypes.CDLL(str(libraries[0])) if libraries else ctypes.CDLL("libgdal.so")
    gdal.GDALOpen.restype = ctypes.c_void_p
    gdal.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALGetRasterBand.restype = ctypes.c_void_p
    gdal.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    gdal.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    gdal.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.GDALGetDefaultRAT.restype = ctypes.c_void_p
    gdal.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    gdal.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    gdal.GDALAllRegister()
    dataset = gdal.GDALOpen(str(path).encode(), 0)
    assert dataset
    try:
        band = gdal.GDALGetRasterBand(dataset, 1)
        table = gdal.GDALGetDefaultRAT(band)
        rows = gdal.GDALRATGetRowCount(table) if table else 0
        names = gdal.GDALGetRasterCategoryNames(band)
        found = []
        while names and names[len(found)] is not None:
            found.append(names[len(found)].decode())
        return found, rows
    finally:
        gdal.GDALClose(dataset)


def label_raster(tmp_path: Path) -> Path:
    labels = block_labels(48, 40, 3, seed=1)
    labels[:4, :4] = IGNORE_INDEX
    labels[20, 20] = (labels[20, 20] + 1) % 3  # a one-pixel island
    path = tmp_path / "scene_classes.tif"
    write_label_raster(path, labels, SCHEMA, CRS_UTM, TRANSFORM)
    return path


def test_gdal_reads_the_category_names_and_attribute_table(tmp_path: Path) -> None:
    path = label_raster(tmp_path)
    side_file = write_category_side_file(path, SCHEMA)
    assert side_file == Path(f"{path}.aux.xml")
    assert gdal_category_names(path) == (["water", "forest", "urban"], 3)
    rows = ET.parse(side_file).getroot().findall(".//GDALRasterAttributeTable/Row")
    assert [[f.text for f in row] for row in rows][2] == ["2", "urban", "200", "0", "0"]
    with rasterio.open(path) as dataset:  # the map itself still reads as before
        assert dataset.crs == CRS_UTM and dataset.transform == TRANSFORM


def test_no_class_names_tag_reads_as_none(tmp_path: Path) -> None:
    assert read_class_names_tag(label_raster(tmp_path)) is None


def test_qgis_style_is_a_paletted_renderer_with_names_and_colours(tmp_path: Path) -> None:
    path = write_qgis_style(tmp_path / "scene_classes.qml", SCHEMA)
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(e.get("value"), e.get("label"), e.get("color")) for e in renderer.iter("paletteEntry")]
    assert entries == [("0", "water", "#0000ff"), ("1", "forest", "#008000"), ("2", "urban", "#c80000")]


def test_polygons_cover_the_map_in_its_crs_and_respect_the_minimum_area(tmp_path: Path) -> None:
    path = label_raster(tmp_path)
    every = write_class_polygons(path, tmp_path / "all.gpkg", SCHEMA, min_area=0)
    sieved = write_class_polygons(path, tmp_path / "sieved.gpkg", SCHEMA, min_area=4)
    assert sieved < every
    info = pyogrio.read_info(tmp_path / "sieved.gpkg")
    assert CRS.from_user_input(info["crs"]) == CRS_UTM
    assert list(info["fields"]) == ["class_index", "class", "area_px"]
    _, _, _, columns = pyogrio.raw.read(tmp_path / "sieved.gpkg")
    class_index, names, areas = columns
    assert min(areas) >= 4
    assert sum(areas) == 48 * 40 - 16  # every labelled pixel once; the nodata corner is left out
    assert {SCHEMA.classes[i] for i in class_index} == set(names)
    left, bottom, right, top = info["total_bounds"]
    assert (left, top) == (500000, 5000000) and (right, bottom) == (500000 + 400, 5000000 - 480)
