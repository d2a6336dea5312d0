"""A real headless Chromium drives the app: upload a face, wait for the results, visit every tab.

Uses the system's Chromium (Debian package ``chromium``); Playwright never
downloads a browser here. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import RunningApp
from tests.inference.shipped import EXAMPLES, REPOSITORY_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPOSITORY_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Milliseconds to wait for an output; the first request also warms up the models.
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def page(running_app: RunningApp) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}; install the Debian package 'chromium' to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api")

    profile = tempfile.mkdtemp(prefix="explorer-chromium-")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )
        try:
            browser_page = context.new_page()
            browser_page.set_default_timeout(TIMEOUT_MS)
            yield browser_page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _screenshot(page, name: str) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_browser_upload_and_tabs(page, running_app: RunningApp) -> None:  # noqa: ANN001
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(running_app.url)

    # Upload a sample face and wait until the Inspect outputs show that upload.
    page.locator("#photo-upload input[type=file]").set_input_files(str(EXAMPLES["breakingbad"]))
    page.get_by_text("upload 'breakingbad.jpg'").first.wait_for()
    page.locator("#inspect-landmarks img").first.wait_for()
    page.locator("#inspect-heatmap .js-plotly-plot").first.wait_for()
    page.locator("#inspect-overlay img").first.wait_for()
    assert page.locator("#inspect-heatmap .js-plotly-plot .heatmaplayer").count() >= 1
    _screenshot(page, "inspect")

    page.get_by_role("tab", name="Compare objectives").click()
    page.locator("#compare-photo img").first.wait_for()
    page.locator("#compare-heatmaps .js-plotly-plot").first.wait_for()
    _screenshot(page, "compare")

    page.get_by_role("tab", name="Label smoothing").click()
    page.locator("#smoothing-ellipses img").first.wait_for()
    page.locator("#smoothing-labels .js-plotly-plot").first.wait_for()
    _screenshot(page, "smoothing")

    page.get_by_role("tab", name="Soft-argmax lesson").click()
    page.locator("#lesson-builder .js-plotly-plot").first.wait_for()
    page.locator("#lesson-rows .js-plotly-plot").first.wait_for()
    _screenshot(page, "lesson")

    assert errors == [], f"the page raised JavaScript errors: {errors}"


def test_browser_bad_upload_shows_message(page, running_app: RunningApp, tmp_path: Path) -> None:  # noqa: ANN001
    page.goto(running_app.url)
    page.get_by_role("tab", name="Inspect").click()
    bad = tmp_path / "truncated.jpg"
    data = EXAMPLES["breakingbad"].read_bytes()
    bad.write_bytes(data[: len(data) // 3])

    page.locator("#photo-upload input[type=file]").set_input_files(str(bad))
    page.get_by_text("damaged or truncated").first.wait_for()
    _screenshot(page, "bad-upload")


def test_browser_lesson_step_range_follows_steps(page, running_app: RunningApp) -> None:  # noqa: ANN001
    # The API accepts steps up to 400; the page narrows the step slider to the training steps.
    page.goto(running_app.url)
    page.get_by_role("tab", name="Soft-argmax lesson").click()
    page.locator("#lesson-rows .js-plotly-plot").first.wait_for()
    step_range = page.locator("#lesson-step input[type=range]")
    page.wait_for_function("() => document.querySelector('#lesson-step input[type=range]').max === '150'")
    assert step_range.get_attribute("max") == "150"

    steps = page.get_by_label("number input for training steps")
    steps.fill("400")
    steps.press("Enter")
    steps.blur()
    page.wait_for_function("() => document.querySelector('#lesson-step input[type=range]').max === '400'")
    assert step_range.get_attribute("max") == "400"
