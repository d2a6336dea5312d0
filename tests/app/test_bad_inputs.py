"""Bad input through the endpoints: each returns a clear error message and the server keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.app.conftest import RunningApp
from tests.app.test_endpoints import call_compare, call_inspect, call_smoothing
from tests.inference import bad_inputs
from tests.inference.shipped import EXAMPLES


def assert_rejected(call: Callable[[], Any], *fragments: str) -> str:
    """Run a request that must fail and check that its message contains every fragment."""
    with pytest.raises(AppError) as raised:
        call()
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"expected {fragment!r} in the error message {message!r}"
    assert "Traceback" not in message
    return message


def assert_still_serving(client: Client) -> None:
    """A good request right after a bad one must succeed."""
    *_, summary, _, _ = call_inspect(client, example="takeo")
    assert np.asarray(summary["points"]).shape == (68, 2)


@pytest.mark.parametrize(
    ("writer", "fragments"),
    [
        (bad_inputs.write_text_file, ("notes.jpg", "is not an image")),
        (bad_inputs.write_empty_file, ("is empty (0 bytes)",)),
        (bad_inputs.write_truncated_jpeg, ("truncated.jpg", "damaged or truncated")),
        (bad_inputs.write_bomb_png, ("bomb.png", "900 megapixels", "above the limit of 40 megapixels")),
        (bad_inputs.write_tiny_png, ("tiny.png", "1 x 1 pixels", "at least 32 pixels")),
    ],
    ids=["non-image", "empty", "truncated-jpeg", "decompression-bomb", "one-pixel"],
)
def test_inspect_rejects_bad_image(client: Client, tmp_path: Path, writer, fragments: tuple[str, ...]) -> None:  # noqa: ANN001
    path = writer(tmp_path)
    assert_rejected(lambda: call_inspect(client, image=handle_file(str(path))), *fragments)
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("writer", "note"),
    [
        (bad_inputs.write_rgba_png, "transparent pixels composited on white"),
        (bad_inputs.write_grey_png, "greyscale image"),
        (bad_inputs.write_16bit_png, "16-bit image reduced to 8 bits"),
        (bad_inputs.write_exif_rotated_jpeg, "rotated by its EXIF orientation tag (6)"),
        (bad_inputs.write_animated_gif, "first of 3 frames used"),
        (bad_inputs.write_cmyk_jpeg, "CMYK converted to RGB"),
    ],
    ids=["rgba", "greyscale", "16-bit", "exif-rotated", "animated-gif", "cmyk"],
)
def test_inspect_accepts_unusual_image(client: Client, tmp_path: Path, writer, note: str) -> None:  # noqa: ANN001
    path = writer(tmp_path)
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(path)))
    assert note in status
    assert np.asarray(summary["points"]).shape == (68, 2)


def test_inspect_exif_rotation_changes_size(client: Client, tmp_path: Path) -> None:
    path = bad_inputs.write_exif_rotated_jpeg(tmp_path)
    *_, summary, _, _ = call_inspect(client, image=handle_file(str(path)))
    assert summary["image_size"] == [48, 96]


def test_compare_rejects_wrong_point_count(client: Client, tmp_path: Path) -> None:
    path = bad_inputs.write_wrong_count_pts(tmp_path)
    assert_rejected(
        lambda: call_compare(client, image=handle_file(str(EXAMPLES["takeo"])), points_file=handle_file(str(path))),
        "wrong_count.pts",
        "has 67 points, expected 68",
    )
    assert_still_serving(client)


def test_compare_rejects_points_of_another_photo(client: Client, tmp_path: Path) -> None:
    # The breakingbad annotation lies far outside the 150 x 225 takeo photo.
    assert_rejected(
        lambda: call_compare(
            client, image=handle_file(str(EXAMPLES["takeo"])), points_file=handle_file(str(EXAMPLES["breakingbad"].with_suffix(".pts")))
        ),
        "lie outside the 150 x 225 photo",
    )
    assert_still_serving(client)


def test_smoothing_rejects_non_text_points_file(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "binary.pts"
    path.write_bytes(b"\x00\xff\x00\xff")
    assert_rejected(lambda: call_smoothing(client, example="takeo", points_file=handle_file(str(path))), "binary.pts", "not a text file")
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"box": "1, 2, 3"}, ("is not four numbers", "x0, y0, x1, y1")),
        ({"box": "90, 90, 10, 10"}, ("x1 not above x0",)),
        ({"face": 7}, ("face 7 was requested", "choose a face index 0..0")),
        ({"landmark": "left ear"}, ("no landmark named 'left ear'",)),
        ({"landmark": "99"}, ("landmark index 99 is outside 0..67",)),
        ({"model": "star"}, ("'star'", "not in the list of choices")),
    ],
    ids=["short-box", "inverted-box", "face-index", "landmark-name", "landmark-number", "model"],
)
def test_inspect_rejects_bad_choice(client: Client, values: dict[str, Any], fragments: tuple[str, ...]) -> None:
    image = values.pop("image", handle_file(str(EXAMPLES["takeo"])))
    assert_rejected(lambda: call_inspect(client, image=image, **values), *fragments)
    assert_still_serving(client)


def test_inspect_rejects_missing_photo(client: Client) -> None:
    assert_rejected(lambda: call_inspect(client), "no photo was given")
    assert_still_serving(client)


def test_inspect_rejects_unknown_example(client: Client) -> None:
    assert_rejected(lambda: call_inspect(client, example="mona-lisa"), "mona-lisa is not in the list of choices")
    assert_still_serving(client)


def test_inspect_rejects_data_face_without_folder(client: Client) -> None:
    assert_rejected(lambda: call_inspect(client, data_index=3), "data face 3 was requested but no data folder is loaded")
    assert_still_serving(client)


def test_smoothing_rejects_invalid_parameters(client: Client) -> None:
    assert_rejected(lambda: call_smoothing(client, example="takeo", min_std=1.5, max_std=1.0), "min_std=1.5, max_std=1.0")
    assert_still_serving(client)


def test_lesson_rejects_invalid_values(client: Client) -> None:
    assert_rejected(lambda: client.predict(shape="triangle", api_name="/lesson"), "'triangle'", "not in the list of choices")
    assert_rejected(lambda: client.predict(target=500, api_name="/lesson"), "target x: 500 is above the maximum 63")
    assert_still_serving(client)


def test_upload_over_size_limit_rejected(client: Client, running_app: RunningApp, tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as handle:
        handle.truncate(26 * 1024 * 1024)

    # gradio_client reads the limit from the server and refuses before uploading.
    with pytest.raises(ValueError) as raised:
        call_inspect(client, image=handle_file(str(path)))
    assert "exceeds the maximum file size of 26214400 bytes" in str(raised.value)

    # The server enforces it too, for clients that do not check.
    with path.open("rb") as handle:
        response = httpx.post(f"{running_app.url}gradio_api/upload", files={"files": ("huge.jpg", handle, "image/jpeg")}, timeout=60)
    assert response.status_code == 413
    assert_still_serving(client)
