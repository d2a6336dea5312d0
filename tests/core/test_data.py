import logging
import random
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from explorer.core.data import (
    MAX_PTS_BYTES,
    SPLIT_RULE,
    AnnotationError,
    DatasetError,
    FaceRecord,
    ImageError,
    LandmarkDataset,
    parse_pts_text,
    read_image,
    read_image_size,
    read_pts,
    read_wflw_list,
    scan_folder,
    split_records,
    validate_folder,
    write_pts,
)
from explorer.core.transforms import Augmentation
from explorer.core.geometry import box_from_points

EXAMPLES = Path(__file__).resolve().parents[2] / "explorer" / "assets" / "examples"


def pts_text(points, header=True, count=None) -> str:
    lines = [f"{x} {y}" for x, y in points]
    if not header:
        return "\n".join(lines) + "\n"
    count = len(points) if count is None else count
    return "\n".join(["version: 1", f"n_points: {count}", "{", *lines, "}"]) + "\n"


def face_points(count=68, seed=0, low=20.0, high=80.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=(count, 2)).round(3)


def write_face(folder: Path, name: str, points=None, size=(100, 100), suffix=".jpg") -> tuple[Path, Path]:
    """Write NAME.jpg (random pixels) and NAME.pts into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    image = np.random.default_rng(len(name)).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image_path = folder / f"{name}{suffix}"
    assert cv2.imwrite(str(image_path), image)
    pts_path = folder / f"{name}.pts"
    pts_path.write_text(pts_text(face_points() if points is None else points))
    return image_path, pts_path


# --------------------------------------------------------------------- .pts


def test_read_pts_with_header(tmp_path):
    path = tmp_path / "face.pts"
    points = face_points()
    path.write_text(pts_text(points))
    result = read_pts(path, expected_count=68)
    assert result.dtype == np.float32
    assert np.allclose(result, points, atol=1e-4)


def test_read_pts_without_header(tmp_path):
    path = tmp_path / "face.pts"
    path.write_text(pts_text(face_points(5), header=False))
    assert read_pts(path).shape == (5, 2)


def test_read_pts_windows_line_endings(tmp_path):
    path = tmp_path / "face.pts"
    path.write_bytes(pts_text(face_points(3)).replace("\n", "\r\n").encode())
    assert read_pts(path).shape == (3, 2)


def test_write_pts_round_trip(tmp_path):
    points = face_points().astype(np.float32)
    path = tmp_path / "out.pts"
    write_pts(path, points)
    assert np.array_equal(read_pts(path), points)


def test_write_pts_rejects_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_pts(tmp_path / "out.pts", np.array([[1.0, np.nan]]))


def test_parse_pts_text_names_source():
    with pytest.raises(AnnotationError, match="upload.pts, line 4"):
        parse_pts_text("version: 1\nn_points: 1\n{\n1 x\n}\n", source="upload.pts")


GOOD_LINES = "\n".join(f"{x} {y}" for x, y in face_points(68))

BAD_PTS = {
    "non-numeric": ("version: 1\nn_points: 2\n{\n1 2\n3 abc\n}\n", 5),
    "nan": ("version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", 5),
    "infinite": ("version: 1\nn_points: 2\n{\n1 2\n3 inf\n}\n", 5),
    "three-values": ("version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n", 5),
    "one-value": ("1 2\n3\n", 2),
    "n-points-mismatch": ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 2),
    "negative-n-points": ("version: 1\nn_points: -2\n{\n}\n", 2),
    "absurd-n-points": ("version: 1\nn_points: 99999999\n{\n}\n", 2),
    "missing-open-brace": ("version: 1\nn_points: 2\n1 2\n3 4\n}\n", 3),
    "missing-close-brace": ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", None),
    "text-after-close": ("version: 1\nn_points: 1\n{\n1 2\n}\n5 6\n", 6),
    "unknown-header": ("version: 1\ncolour: red\n{\n1 2\n}\n", 2),
    "empty": ("", None),
    "wrong-count": (pts_text(face_points(67)), None),
}


@pytest.mark.parametrize("case", list(BAD_PTS))
def test_read_pts_rejects_invalid(tmp_path, case):
    text, line = BAD_PTS[case]
    path = tmp_path / f"{case}.pts"
    path.write_text(text)
    with pytest.raises(AnnotationError) as caught:
        read_pts(path, expected_count=68 if case == "wrong-count" else None)
    assert path.name in str(caught.value)
    assert caught.value.line == line


def test_read_pts_rejects_missing_file(tmp_path):
    path = tmp_path / "absent.pts"
    with pytest.raises(AnnotationError, match="absent.pts: annotation file not found"):
        read_pts(path)


def test_read_pts_rejects_binary_junk(tmp_path):
    path = tmp_path / "junk.pts"
    path.write_bytes(bytes(np.random.default_rng(0).integers(128, 256, size=500, dtype=np.uint8)))
    with pytest.raises(AnnotationError, match="junk.pts: not a text file"):
        read_pts(path)


def test_read_pts_rejects_nul_bytes(tmp_path):
    path = tmp_path / "nul.pts"
    path.write_bytes(b"1 2\n\x00\x00\n")
    with pytest.raises(AnnotationError, match="nul.pts: not a text file"):
        read_pts(path)


def test_read_pts_rejects_oversized_file(tmp_path):
    path = tmp_path / "huge.pts"
    path.write_bytes(b"1 2\n" * (MAX_PTS_BYTES // 4 + 1))
    with pytest.raises(AnnotationError, match="huge.pts: file is .* bytes, above"):
        read_pts(path)


def test_annotation_error_is_value_error():
    assert issubclass(AnnotationError, ValueError)


# ------------------------------------------------------------------- images


def test_read_image_example_ppm():
    image = read_image(EXAMPLES / "takeo.ppm")
    assert image.shape == (225, 150, 3)
    assert image.dtype == np.uint8


def test_read_image_greyscale_to_rgb():
    image = read_image(EXAMPLES / "einstein.jpg")
    assert image.shape == (1024, 817, 3)
    assert np.array_equal(image[..., 0], image[..., 2])


def test_read_image_bgr_to_rgb(tmp_path):
    path = tmp_path / "red.png"
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[..., 2] = 255
    cv2.imwrite(str(path), bgr)
    assert read_image(path)[0, 0].tolist() == [255, 0, 0]


def test_read_image_rgba(tmp_path):
    path = tmp_path / "alpha.png"
    cv2.imwrite(str(path), np.full((4, 5, 4), 100, dtype=np.uint8))
    assert read_image(path).shape == (4, 5, 3)


def test_read_image_16_bit(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((4, 4), 65535, dtype=np.uint16))
    image = read_image(path)
    assert image.dtype == np.uint8
    assert image.max() == 255


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_read_image_rejects_truncated(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    ok, encoded = cv2.imencode(suffix, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(encoded.tobytes()[: encoded.size * 2 // 3])
    with pytest.raises(ImageError, match=f"cut{suffix}"):
        read_image(path)


def test_read_image_rejects_junk(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ImageError, match="junk.jpg"):
        read_image(path)


def test_read_image_rejects_huge_header(tmp_path):
    path = tmp_path / "bomb.png"
    ihdr = struct.pack(">I4sIIBBBBB", 13, b"IHDR", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00" * 64)
    with pytest.raises(ImageError, match="bomb.png: image is 100000x100000, above the limit"):
        read_image(path)


def test_read_image_rejects_missing(tmp_path):
    with pytest.raises(ImageError, match="absent.jpg: image file not found"):
        read_image(tmp_path / "absent.jpg")


@pytest.mark.parametrize("name", ["breakingbad.jpg", "einstein.jpg", "takeo.ppm"])
def test_read_image_size_matches_decode(name):
    height, width = read_image(EXAMPLES / name).shape[:2]
    assert read_image_size(EXAMPLES / name) == (width, height)


def test_read_image_size_png(tmp_path):
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.zeros((7, 13), dtype=np.uint8))
    assert read_image_size(path) == (13, 7)


def test_read_image_size_rejects_cut_header(tmp_path):
    path = tmp_path / "header.jpg"
    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), dtype=np.uint8))
    path.write_bytes(encoded.tobytes()[:40])
    with pytest.raises(ImageError, match="header.jpg: unreadable image header"):
        read_image_size(path)


# ------------------------------------------------------------- folder scans


def test_scan_examples():
    records = scan_folder(EXAMPLES)
    assert [record.name for record in records] == ["breakingbad", "einstein", "takeo"]
    assert records[2].image_size == (150, 225)
    assert records[0].points.shape == (68, 2)


def test_scan_nested_names(tmp_path):
    write_face(tmp_path / "b" / "inner", "x")
    write_face(tmp_path / "a", "y", suffix=".png")
    records = scan_folder(tmp_path)
    assert [record.name for record in records] == ["a/y", "b/inner/x"]
    assert records[1].source == "b/inner"


def test_scan_not_recursive(tmp_path):
    write_face(tmp_path, "top")
    write_face(tmp_path / "sub", "deep")
    assert [record.name for record in scan_folder(tmp_path, recursive=False)] == ["top"]


def test_scan_ignores_images_without_pts(tmp_path):
    write_face(tmp_path, "face")
    cv2.imwrite(str(tmp_path / "extra.jpg"), np.zeros((5, 5, 3), dtype=np.uint8))
    assert len(scan_folder(tmp_path)) == 1


def make_bad_folder(root: Path) -> dict[str, Path]:
    """A folder with two valid faces and one invalid file of each kind; return the invalid files."""
    write_face(root, "good1")
    write_face(root, "good2")
    bad = {}
    bad["missing-image"] = root / "lonely.pts"
    bad["missing-image"].write_text(pts_text(face_points()))
    _, bad["non-numeric"] = write_face(root, "letters")
    bad["non-numeric"].write_text(pts_text(face_points()).replace("{\n", "{\nx y\n", 1))
    _, bad["wrong-count"] = write_face(root, "short", points=face_points(60))
    _, bad["outside"] = write_face(root, "outside", points=face_points(low=20, high=80) + [0, 200])
    bad["truncated-image"], _ = write_face(root, "cut")
    bad["truncated-image"].write_bytes(bad["truncated-image"].read_bytes()[:20])
    return bad


def test_scan_reports_every_bad_file(tmp_path):
    bad = make_bad_folder(tmp_path)
    with pytest.raises(DatasetError) as caught:
        scan_folder(tmp_path)
    reported = {problem.path for problem in caught.value.problems}
    assert reported == set(bad.values())
    for path in bad.values():
        assert str(path) in str(caught.value)


def test_scan_outside_point_message(tmp_path):
    bad = make_bad_folder(tmp_path)
    records, problems = validate_folder(tmp_path)
    reasons = {problem.path: problem.reason for problem in problems}
    assert "outside the 100x100 image" in reasons[bad["outside"]]


def test_scan_skip_invalid_logs_each(tmp_path, caplog):
    bad = make_bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="explorer.core.data"):
        records = scan_folder(tmp_path, skip_invalid=True)
    assert [record.name for record in records] == ["good1", "good2"]
    assert len([entry for entry in caplog.records if entry.levelno == logging.WARNING]) == len(bad)


def test_scan_expected_count(tmp_path):
    write_face(tmp_path, "face")
    with pytest.raises(DatasetError, match="has 68 points, expected 98"):
        scan_folder(tmp_path, expected_count=98)


def test_scan_decode_catches_truncated_body(tmp_path):
    image_path, _ = write_face(tmp_path, "face", size=(200, 200))
    data = image_path.read_bytes()
    image_path.write_bytes(data[: len(data) // 2])
    assert len(scan_folder(tmp_path)) == 1
    with pytest.raises(DatasetError, match="cannot decode"):
        scan_folder(tmp_path, decode_images=True)


def test_scan_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_folder(tmp_path / "nothing")


def test_scan_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no valid annotated faces"):
        scan_folder(tmp_path)


# --------------------------------------------------------------------- WFLW


def wflw_line(seed: int, image: str, flags=(0, 1, 0, 0, 1, 0)) -> str:
    points = np.random.default_rng(seed).uniform(10, 90, size=196).round(3)
    box = [5, 6, 95, 96]
    return " ".join(str(value) for value in [*points, *box, *flags]) + " " + image


def test_wflw_list_reads_faces(tmp_path):
    (tmp_path / "images" / "51--Dresses").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / "51--Dresses" / name).write_bytes(b"")
    listing = tmp_path / "list.txt"
    lines = [wflw_line(0, "51--Dresses/b.jpg"), wflw_line(1, "51--Dresses/a.jpg"), wflw_line(2, "51--Dresses/a.jpg")]
    listing.write_text("\n".join(lines) + "\n")
    records = read_wflw_list(listing, tmp_path / "images")
    assert [record.name for record in records] == ["51--Dresses/a#1", "51--Dresses/a#2", "51--Dresses/b#1"]
    assert records[0].points.shape == (98, 2)
    assert records[0].box.tolist() == [5, 6, 95, 96]
    assert records[0].attributes == {"pose": 0, "expression": 1, "illumination": 0, "make_up": 0, "occlusion": 1, "blur": 0}
    assert records[0].source == "51--Dresses"


def test_wflw_list_rejects_short_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(wflw_line(0, "a.jpg") + "\n1 2 3 a.jpg\n")
    with pytest.raises(AnnotationError, match="list.txt, line 2: expected 206 numbers"):
        read_wflw_list(listing, tmp_path, check_images=False)


def test_wflw_list_rejects_bad_flag(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(wflw_line(0, "a.jpg", flags=(0, 2, 0, 0, 0, 0)) + "\n")
    with pytest.raises(AnnotationError, match="line 1: attribute flags must be 0 or 1"):
        read_wflw_list(listing, tmp_path, check_images=False)


def test_wflw_list_reports_missing_images(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(wflw_line(0, "x.jpg") + "\n" + wflw_line(1, "y.jpg") + "\n")
    with pytest.raises(DatasetError) as caught:
        read_wflw_list(listing, tmp_path)
    assert len(caught.value.problems) == 2


# -------------------------------------------------------------------- split


def fake_records(count: int) -> list[FaceRecord]:
    return [FaceRecord(Path(f"{index:03d}.jpg"), np.zeros((68, 2), np.float32), f"{index:03d}", ".") for index in range(count)]


def test_split_sizes():
    records = fake_records(25)
    assert len(split_records(records, "val")) == 3
    assert len(split_records(records, "train")) == 22
    assert len(split_records(records, "all")) == 25


def test_split_val_every_tenth():
    assert [record.name for record in split_records(fake_records(25), "val")] == ["000", "010", "020"]


def test_split_ignores_input_order():
    records = fake_records(31)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert [r.name for r in split_records(shuffled, "train")] == [r.name for r in split_records(records, "train")]


def test_split_rule_names_rule():
    assert "index % 10 == 0" in SPLIT_RULE


def test_split_rejects_unknown_subset():
    with pytest.raises(ValueError, match="'train', 'val' or 'all'"):
        split_records(fake_records(3), "test")


# ------------------------------------------------------------------ dataset


def test_dataset_item_shapes():
    dataset = LandmarkDataset(scan_folder(EXAMPLES), input_size=64)
    item = dataset[2]
    assert item["image"].shape == (3, 64, 64)
    assert item["image"].dtype == torch.float32
    assert item["points"].shape == (68, 2)
    assert item["matrix"].dtype == torch.float64
    assert item["index"] == 2


def test_dataset_points_follow_matrix():
    records = scan_folder(EXAMPLES)
    dataset = LandmarkDataset(records, input_size=64, augmentation=Augmentation())
    item = dataset[1]
    matrix = item["matrix"].numpy()
    expected = records[1].points.astype(np.float64)
    if np.linalg.det(matrix[:, :2]) < 0:
        from explorer.core.landmarks import IBUG68

        expected = expected[list(IBUG68.flip_permutation)]
    mapped = expected @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - item["points"].numpy()).max() < 1e-3


def test_dataset_plain_image_in_unit_range():
    item = LandmarkDataset(scan_folder(EXAMPLES), input_size=64)[0]
    assert item["image"].min() >= 0.0
    assert item["image"].max() <= 1.0


def test_dataset_repeats_with_seed_and_epoch():
    records = scan_folder(EXAMPLES)
    first = LandmarkDataset(records, input_size=64, augmentation=Augmentation(), seed=3)
    second = LandmarkDataset(records, input_size=64, augmentation=Augmentation(), seed=3, cache_images=False)
    assert torch.equal(first[0]["image"], second[0]["image"])


def test_dataset_epoch_changes_augmentation():
    dataset = LandmarkDataset(scan_folder(EXAMPLES), input_size=64, augmentation=Augmentation())
    before = dataset[0]["points"]
    dataset.set_epoch(1)
    assert not torch.equal(before, dataset[0]["points"])


def test_dataset_rejects_mixed_counts():
    records = fake_records(2)
    records[1].points = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="same number of points"):
        LandmarkDataset(records)


def test_dataset_preload_fills_cache():
    dataset = LandmarkDataset(scan_folder(EXAMPLES), input_size=32)
    dataset.preload()
    assert len(dataset._cache) == 3


# ---------------------------------------------------------------- real data


@pytest.mark.data
def test_real_data_every_file_valid(real_data):
    records = scan_folder(real_data)
    assert len(records) == 1207


@pytest.mark.data
def test_real_data_split_sizes(real_data):
    records = scan_folder(real_data)
    assert len(split_records(records, "train")) == 1086
    assert len(split_records(records, "val")) == 121


@pytest.mark.data
def test_real_data_sources(real_data):
    sources = {record.source for record in scan_folder(real_data)}
    assert sources == {"afw", "helen/trainset"}


@pytest.mark.data
def test_real_data_item_shapes(real_data):
    dataset = LandmarkDataset(split_records(scan_folder(real_data), "train"), input_size=128, augmentation=Augmentation())
    item = dataset[0]
    assert item["image"].shape == (3, 128, 128)
    assert item["points"].shape == (68, 2)
    assert item["matrix"].shape == (2, 3)


def test_dataset_boxes_replace_point_box():
    records = scan_folder(EXAMPLES)
    boxes = [box_from_points(record.points) for record in records]
    default = LandmarkDataset(records, input_size=64)[1]

    # The points' own boxes reproduce the default crop exactly.
    same = LandmarkDataset(records, input_size=64, boxes=boxes)[1]
    assert torch.equal(same["image"], default["image"])

    # A box shifted by 10 pixels moves the crop by 10 image pixels.
    shifted = LandmarkDataset(records, input_size=64, boxes=[box + 10.0 for box in boxes])[1]
    assert not torch.equal(shifted["image"], default["image"])
    crop_pixels_per_image_pixel = 64 / (1.25 * max(boxes[1][2] - boxes[1][0], boxes[1][3] - boxes[1][1]))
    expected = default["points"].numpy() - 10.0 * crop_pixels_per_image_pixel
    np.testing.assert_allclose(shifted["points"].numpy(), expected, atol=1e-3)


def test_dataset_boxes_count_checked():
    records = scan_folder(EXAMPLES)
    with pytest.raises(ValueError, match="pass one box per record"):
        LandmarkDataset(records, input_size=64, boxes=[])
