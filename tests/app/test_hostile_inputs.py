"""Hostile and malformed input found by trying the app as a new user: each gets a clear message, and the server keeps serving."""

from __future__ import annotations

import base64
import io
import logging
import threading
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from explorer.app.common import parse_landmark
from explorer.app.config import MAX_FILE_SIZE, MAX_REQUEST_BODY
from explorer.app.figures import region_view
from explorer.app.main import MODEL_EVENTS
from explorer.core.landmarks import scheme_for_count
from explorer.inference.predictor import InputError, find_faces, load_upload
from tests.app.conftest import RunningApp
from tests.app.test_bad_inputs import assert_rejected, assert_still_serving
from tests.app.test_endpoints import call_compare, call_inspect, call_smoothing
from tests.inference import bad_inputs
from tests.inference.shipped import EXAMPLES


def call_raw(running_app: RunningApp, api_name: str, body: str) -> str:
    """Send a raw JSON body to ``/gradio_api/call/API_NAME`` and return the event stream's text."""
    base = running_app.url.rstrip("/")
    posted = httpx.post(f"{base}/gradio_api/call/{api_name}", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert posted.status_code == 200, posted.text
    event_id = posted.json()["event_id"]
    return httpx.get(f"{base}/gradio_api/call/{api_name}/{event_id}", timeout=120).text


# -- typed boxes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "fragments"),
    [
        ("0,0,1e308,1e308", ("larger than 4 times the 150 x 225 image", "at most 900 pixels a side")),
        ("-1e308,-1e308,1e308,1e308", ("too large to measure",)),
        ("0,0,100000000,1", ("1e+08 x 1 pixels", "larger than 4 times")),
        ("0,0,1,1", ("1 x 1 pixels", "at least 8 pixels")),
        ("0,0,0.001,0.001", ("0.001 x 0.001 pixels", "at least 8 pixels")),
    ],
    ids=["huge", "overflowing", "one-pixel-tall-and-huge", "one-pixel", "sub-pixel"],
)
def test_inspect_rejects_box_size(client: Client, box: str, fragments: tuple[str, ...]) -> None:
    # A huge box used to allocate a square the size of the box (MemoryError) or
    # fail with "CropGeometry.matrix is singular".
    message = assert_rejected(lambda: call_inspect(client, example="takeo", box=box), *fragments)
    assert "CropGeometry" not in message
    assert_still_serving(client)


def test_rejected_box_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="explorer.app.errors"):
        assert_rejected(lambda: call_inspect(client, example="takeo", box="0,0,1,1"), "at least 8 pixels")
    messages = [record.getMessage() for record in caplog.records]
    assert any("inspect rejected its input: box '0,0,1,1'" in message for message in messages), messages


def test_inspect_box_text_shortened(client: Client) -> None:
    message = assert_rejected(lambda: call_inspect(client, example="takeo", box="x" * 10_000), "is not four numbers")
    assert len(message) < 400


def test_region_view_memory_bounded() -> None:
    # The whole-image view of a 40000 x 32 photo used to allocate a
    # 40000 x 40000 x 3 black square (4.8 GB) before resizing it.
    rgb = np.full((32, 40_000, 3), 128, dtype=np.uint8)
    tracemalloc.start()
    try:
        view = region_view(rgb, np.array([0.0, 0.0, 39_999.0, 31.0]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view.image.shape == (448, 448, 3)
    assert peak < 50_000_000, f"region_view allocated {peak / 1e6:.0f} MB"


def test_region_view_matches_view_mapping() -> None:
    # A bright pixel must land where View.to_view puts its image coordinates.
    rgb = np.zeros((200, 300, 3), dtype=np.uint8)
    rgb[120, 80] = 255
    view = region_view(rgb, np.array([40.0, 90.0, 140.0, 190.0]))
    expected = np.rint(view.to_view(np.array([80.0, 120.0]))).astype(int)
    brightest = np.unravel_index(view.image[:, :, 0].argmax(), view.image.shape[:2])
    assert abs(brightest[1] - expected[0]) <= 1
    assert abs(brightest[0] - expected[1]) <= 1


def test_inspect_wide_image_whole_view(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (40_000, 32), (100, 100, 100)).save(path)
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(path)))
    assert "40000 x 32 px" in status
    assert summary["face"]["kind"] == "whole image"


# -- images ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".eps", ".ico", ".pdf"])
def test_inspect_rejects_unsupported_format(client: Client, tmp_path: Path, suffix: str) -> None:
    # Pillow decodes these, and its EPS plugin would run Ghostscript on the upload.
    path = tmp_path / f"picture{suffix}"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    assert_rejected(lambda: call_inspect(client, image=handle_file(str(path))), f"'picture{suffix}' is not an image that can be read", "JPEG, PNG")
    assert_still_serving(client)


def test_load_upload_opens_multi_picture_jpeg() -> None:
    buffer = io.BytesIO()
    frame = Image.new("RGB", (64, 64), (200, 100, 50))
    frame.save(buffer, format="MPO", save_all=True, append_images=[frame])
    loaded = load_upload(buffer.getvalue())
    assert loaded.format == "MPO"
    assert loaded.notes == ("first of 2 frames used",)


def test_inspect_ignores_invalid_exif_orientation(client: Client, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 99
    path = tmp_path / "odd-exif.jpg"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(path, exif=exif)
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(path)))
    assert "rotated" not in status
    assert summary["image_size"] == [64, 48]


def test_load_upload_float_image_with_nan(tmp_path: Path) -> None:
    values = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    values[0, 0] = np.nan
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        loaded = load_upload(path)
    assert loaded.rgb[0, 0].tolist() == [0, 0, 0]
    assert loaded.rgb[-1, -1].tolist() == [255, 255, 255]


def test_find_faces_concurrent_calls() -> None:
    # OpenCV's cascade classifier is shared, and two threads running it at once
    # failed with "scaleIdx < scaleData->size()" or crashed the process.
    images = [load_upload(EXAMPLES[name]).rgb for name in ("einstein", "takeo", "takeo")]
    expected = [len(find_faces(image)) for image in images]
    failures: list[str] = []
    counts: list[tuple[int, int]] = []

    def detect(offset: int) -> None:
        for number in range(4):
            index = (offset + number) % len(images)
            try:
                counts.append((index, len(find_faces(images[index]))))
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                failures.append(repr(error))

    threads = [threading.Thread(target=detect, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(count == expected[index] for index, count in counts)


# -- annotations ----------------------------------------------------------------


def test_points_file_message_hides_server_path(client: Client, tmp_path: Path) -> None:
    path = bad_inputs.write_wrong_count_pts(tmp_path)
    message = assert_rejected(lambda: call_compare(client, example="takeo", points_file=handle_file(str(path))), "wrong_count.pts: has 67 points")
    assert "/tmp" not in message
    assert "gradio" not in message


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        (["50 50"] * 68, ("the 68 points span only 0 x 0 pixels",)),
        (["50 50"] * 36 + ["90 60"] + ["40 40"] * 8 + ["90 60"] + ["60 50"] * 22, ("points 36 and 45 (the outer eye corners) coincide",)),
    ],
    ids=["one-point", "same-eye-corners"],
)
def test_compare_rejects_degenerate_points(client: Client, tmp_path: Path, lines: list[str], fragments: tuple[str, ...]) -> None:
    # Identical points used to fail with "normalizer distances must be &gt; 0".
    path = tmp_path / "degenerate.pts"
    path.write_text("version: 1\nn_points: 68\n{\n" + "\n".join(lines) + "\n}\n")
    message = assert_rejected(lambda: call_compare(client, example="takeo", points_file=handle_file(str(path))), "degenerate.pts", *fragments)
    assert "&gt;" not in message
    assert_still_serving(client)


# -- landmarks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("36.5", "landmark 36.5 is not a whole number"),
        ("3 6", "no landmark named '3 6'"),
        ("-1", "landmark index -1 is outside 0..67"),
        ("36 · left eye, outer corner", "number 36 is 'right eye, outer corner', not 'left eye, outer corner'"),
    ],
    ids=["fraction", "two-numbers", "negative", "mismatched-entry"],
)
def test_parse_landmark_rejects_ambiguous(value: str, fragment: str) -> None:
    # "36.5" and "3 6" used to select landmarks 36 and 3 without a word.
    with pytest.raises(InputError) as raised:
        parse_landmark(value, scheme_for_count(68))
    assert fragment in str(raised.value)


def test_parse_landmark_shortens_long_text() -> None:
    with pytest.raises(InputError) as raised:
        parse_landmark("y" * 5000, scheme_for_count(68))
    assert len(str(raised.value)) < 300


# -- numbers and sliders --------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"window": None}, "window: no value was given; choose a value from 1 to 8"),
        ({"sigma": 100}, "sigma: 100 is above the maximum 4; choose a value from 0.5 to 4"),
        ({"max_std": 0}, "max_std: 0 is below the minimum 1"),
    ],
    ids=["missing", "above", "below"],
)
def test_smoothing_slider_messages_name_field(client: Client, values: dict[str, Any], fragment: str) -> None:
    # Gradio's own messages ("Value 100 is greater than maximum value 4.0.")
    # do not say which slider, and None gave no message at all.
    assert_rejected(lambda: call_smoothing(client, example="takeo", **values), fragment)
    assert_still_serving(client)


def test_inspect_rejects_fractional_face(client: Client) -> None:
    # Gradio rounded 2.5 to face 2 before the handler could see it.
    assert_rejected(lambda: call_inspect(client, example="takeo", face=2.5), "Face: 2.5 is not a whole number")


@pytest.mark.parametrize(
    ("api_name", "body", "fragment"),
    [
        ("inspect", '{"data": [null, "takeo", -1, null, NaN, "", "36", "structured"]}', "Face: nan is not a finite number"),
        ("inspect", '{"data": [null, "takeo", -1, null, "abc", "", "36", "structured"]}', "Face: 'abc' is not a number"),
        ("inspect", '{"data": [null, ["takeo"], -1, null, 0, "", "36", "structured"]}', "example ['takeo'] is not a name"),
        ("lesson", '{"data": ["two peaks", NaN, 15, 1.5, 6, 0.5, 1.0, 36, 30, 12, 150, 1.0, "SGD", 150]}', "centre x (heatmap px): nan is not a finite number"),
        ("smoothing", '{"data": [null, "takeo", -1, null, 0, "", "36", NaN, 4, 2.0, 0.8, 0.5, 0.05, 0.5, 4.0, true]}', "sigma: nan is not a finite number"),
    ],
    ids=["nan-face", "text-face", "list-example", "nan-lesson", "nan-smoothing"],
)
def test_raw_request_values_get_messages(running_app: RunningApp, client: Client, api_name: str, body: str, fragment: str) -> None:
    # Python's JSON parser accepts NaN, which passed Gradio's range checks and
    # failed later with "cannot convert float NaN to integer" or no message.
    stream = call_raw(running_app, api_name, body)
    assert "event: error" in stream
    assert fragment in stream
    assert_still_serving(client)


def test_lesson_step_beyond_default_steps(client: Client) -> None:
    # The step slider's range was fixed at 0..150, so the API could not show step 300 of a 400-step run.
    *_, summary = client.predict(steps=400, step=300, api_name="/lesson")
    assert summary["training"]["steps"] == 400
    assert summary["training"]["step"] == 300


# -- request size ---------------------------------------------------------------


def _data_url_payload(extra_bytes: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue() + b"\0" * extra_bytes).decode("ascii")
    return {"path": None, "url": f"data:image/png;base64,{encoded}", "meta": {"_type": "gradio.FileData"}}


def test_pasted_image_over_size_limit(running_app: RunningApp, client: Client) -> None:
    # A data URL travels inside the JSON body, where Gradio's max_file_size does not apply.
    image = _data_url_payload(MAX_FILE_SIZE + 1024)
    body = httpx.Request("POST", "/", json={"data": [image, "", -1, None, 0, "", "36", "structured"]}).content.decode()
    stream = call_raw(running_app, "inspect", body)
    assert "the pasted image is 25.0 MiB, above the upload limit of 25 MiB" in stream
    assert_still_serving(client)


def test_request_body_over_limit_rejected(running_app: RunningApp, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    body = b'{"data": ["' + b"x" * (MAX_REQUEST_BODY + 1) + b'"]}'
    with caplog.at_level(logging.WARNING, logger="explorer.app.http_limits"):
        response = httpx.post(f"{running_app.url}gradio_api/call/inspect", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert f"above the limit of {MAX_REQUEST_BODY} bytes" in response.text
    assert "rejected POST /gradio_api/call/inspect from 127.0.0.1" in caplog.text
    assert_still_serving(client)


def test_request_body_over_limit_without_length(running_app: RunningApp, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    # A chunked body has no Content-Length, so reading stops once it passes the limit.
    def chunks():  # noqa: ANN202
        for _ in range(MAX_REQUEST_BODY // 1_000_000 + 2):
            yield b"x" * 1_000_000

    with caplog.at_level(logging.WARNING, logger="explorer.app.http_limits"):
        response = httpx.post(f"{running_app.url}gradio_api/call/inspect", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code in (400, 413)
    assert "rejected POST /gradio_api/call/inspect from 127.0.0.1" in caplog.text
    assert_still_serving(client)


# -- configuration --------------------------------------------------------------


def test_model_events_share_concurrency_group(running_app: RunningApp) -> None:
    # Gradio limits concurrency per event unless events share a concurrency_id.
    groups = {fn.api_name: fn.concurrency_id for fn in running_app.demo.fns.values() if fn.api_name in ("inspect", "compare", "smoothing", "lesson")}
    assert groups == {"inspect": MODEL_EVENTS, "compare": MODEL_EVENTS, "smoothing": MODEL_EVENTS, "lesson": MODEL_EVENTS}
