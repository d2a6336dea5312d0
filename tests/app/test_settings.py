"""App settings from the environment, loopback detection and the landmark click mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.app.common import parse_landmark
from explorer.app.config import AppSettings, is_loopback
from explorer.app.figures import photo_view_factor
from explorer.app.inspect_tab import nearest_landmark
from explorer.core.landmarks import scheme_for_count
from explorer.inference.predictor import InputError


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXPLORER_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("EXPLORER_PORT", "7999")
    monkeypatch.setenv("EXPLORER_CONCURRENCY", "3")
    monkeypatch.delenv("EXPLORER_DATA", raising=False)
    monkeypatch.delenv("EXPLORER_HOST", raising=False)
    settings = AppSettings.from_environment()
    assert settings.checkpoints == tmp_path
    assert settings.port == 7999
    assert settings.concurrency == 3
    assert settings.host == "127.0.0.1"
    assert settings.data is None
    assert settings.checkpoint_paths()["softargmax"] == tmp_path / "softargmax.safetensors"


def test_settings_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_PORT", "7999")
    settings = AppSettings.from_environment(port=8001, host="localhost")
    assert settings.port == 8001
    assert settings.host == "localhost"


def test_settings_reject_bad_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_PORT", "seventy")
    with pytest.raises(ValueError) as raised:
        AppSettings.from_environment()
    assert "EXPLORER_PORT='seventy' is not an integer" in str(raised.value)


@pytest.mark.parametrize(("host", "expected"), [("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.5", False)])
def test_is_loopback_hosts(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(("value", "expected"), [("36", 36), (45, 45), ("36 · right eye, outer corner", 36), ("Left eye, outer corner", 45), ("", 0), (None, 0)])
def test_parse_landmark_forms(value: object, expected: int) -> None:
    assert parse_landmark(value, scheme_for_count(68)) == expected


def test_parse_landmark_rejects_fraction() -> None:
    with pytest.raises(InputError) as raised:
        parse_landmark(2.5, scheme_for_count(68))
    assert "not a whole number" in str(raised.value)


def test_nearest_landmark_maps_display_click() -> None:
    # A 2048 x 1024 photo is shown at half size, so image point (1000, 500) is near display (499.75, 249.75).
    assert photo_view_factor(2048, 1024) == 0.5
    points = [[0.0, 0.0] for _ in range(68)]
    points[12] = [1000.0, 500.0]
    summary = {"image_size": [2048, 1024], "points": points}
    assert nearest_landmark(summary, (499.75, 249.75)) == 12


def test_nearest_landmark_without_result() -> None:
    assert nearest_landmark(None, (10, 10)) is None
    assert nearest_landmark({"points": []}, (10, 10)) is None
