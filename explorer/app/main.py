"""Build and launch the explorer's Gradio app.

Layout: a header with the device and the loaded models, a face panel on the
left (photo, example, data face, annotation, face choice, landmark) shared by
the Inspect, Compare and Label smoothing tabs, and the tabs on the right.

Named API endpoints, for ``gradio_client`` (see docs/api.md):
``/inspect``, ``/compare``, ``/smoothing`` and ``/lesson``. Every other event
is private.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import torch

from explorer.app.common import DownloadFolder, landmark_choices, parse_landmark
from explorer.app.compare_tab import build_compare_tab, run_compare
from explorer.app.components import CheckedNumber, PhotoUpload
from explorer.app.config import ASSETS_DIR, MAX_FILE_SIZE, MAX_REQUEST_BODY, MODEL_LABELS, AppSettings, is_loopback
from explorer.app.errors import handle_errors
from explorer.app.http_limits import middleware_arguments
from explorer.app.inspect_tab import build_inspect_tab, nearest_landmark, run_inspect
from explorer.app.lesson_tab import build_lesson_tab, run_lesson
from explorer.app.smoothing_tab import build_smoothing_tab, run_smoothing
from explorer.app.sources import Workspace
from explorer.core.checkpoints import CheckpointError
from explorer.inference.predictor import Predictor

logger = logging.getLogger(__name__)

TITLE = "Annotation-ambiguity explorer"

# The landmark selected when the page opens: the subject's right outer eye corner.
DEFAULT_LANDMARK = 36

CSS = """
.gradio-container { max-width: 1500px !important; margin: 0 auto; }
#app-header h1 { margin-bottom: 0.1em; }
#app-header p { margin-top: 0.2em; color: var(--body-text-color-subdued); }
.tab-intro p { font-size: 0.95em; color: var(--body-text-color-subdued); }
.status-line p { font-size: 0.9em; margin: 0; }
#face-panel { position: sticky; top: 8px; }
"""

# Every event that decodes photos or runs torch or OpenCV shares this
# concurrency group, so that at most ``concurrency`` of them run at once
# across all users and tabs. By default Gradio limits concurrency per event
# listener. Without the group, one page load (Inspect, Compare, Label
# smoothing and the lesson) would run four heavy events at once, each with
# cpu_count // concurrency torch threads, which oversubscribes the cores.
MODEL_EVENTS = "model-events"

# (how often, maximum age) in seconds for Gradio's cleanup of its cache folder.
CACHE_CLEANUP = (900, 3600)

THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="cyan", neutral_hue="slate")


def load_workspace(settings: AppSettings) -> Workspace:
    """Load the checkpoints once and scan the optional data folder.

    Raises:
        CheckpointError: a checkpoint is missing or invalid; the message names the file.
    """
    paths = settings.checkpoint_paths()
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint file(s) not found: {', '.join(missing)}. Put structured.safetensors and "
            "softargmax.safetensors (with their .json cards) in that folder, or point EXPLORER_CHECKPOINTS "
            "at the folder that has them."
        )
    predictor = Predictor(paths, device=settings.device)
    return Workspace(predictor, settings.data)


def configure_torch_threads(concurrency: int) -> int:
    """Give each concurrently running event an equal share of the CPU cores; return the thread count."""
    threads = max(1, (os.cpu_count() or 1) // max(1, concurrency))
    torch.set_num_threads(threads)
    return threads


def header_markdown(workspace: Workspace) -> str:
    """Describe the device and the loaded checkpoints for the page header."""
    predictor = workspace.predictor
    models = []
    for name, loaded in predictor.models.items():
        score = f"validation NME {loaded.validation_nme:.2f}%" if loaded.validation_nme is not None else "no validation score"
        models.append(f"**{MODEL_LABELS.get(name, name)}** ({loaded.path.name}, {score}, decoded with {loaded.decoder})")
    lines = [
        f"# {TITLE}",
        "What heatmap-regression landmark detectors output, how soft-argmax and argmax decode it, and how "
        "image-aware label smoothing follows the face's edges. "
        f"Running on **{predictor.device_name}** · models: " + "; ".join(models) + ".",
    ]
    if workspace.data_faces:
        lines.append(f"Data folder: {len(workspace.data_faces)} validation faces from {workspace.data_root}.")
    elif workspace.data_problem:
        lines.append(f"Data folder not loaded: {workspace.data_problem}.")
    return "\n\n".join(lines)


@dataclass
class FacePanel:
    """The shared face inputs, in the order the face tabs' handlers take them."""

    photo: PhotoUpload
    example: gr.Dropdown
    data_index: CheckedNumber
    points_file: gr.File
    face: CheckedNumber
    box: gr.Textbox
    landmark: gr.Dropdown
    version: gr.State
    previous: gr.Button | None
    following: gr.Button | None

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.photo, self.example, self.data_index, self.points_file, self.face, self.box, self.landmark]


def build_face_panel(workspace: Workspace) -> FacePanel:
    """Lay out the face panel (inside an open column) and return its components."""
    scheme = workspace.predictor.scheme
    examples = list(workspace.examples)
    choices = landmark_choices(scheme)
    photo = PhotoUpload(label="Photo", type="filepath", sources=["upload", "clipboard"], height=240, elem_id="photo-upload")
    example = gr.Dropdown(
        choices=[("(none)", "")] + [(name, name) for name in examples],
        value=examples[0] if examples else "",
        label="…or an example face (with annotation)",
        elem_id="example-choice",
    )
    has_data = bool(workspace.data_faces)
    with gr.Row(visible=has_data):
        data_index = CheckedNumber(value=-1, precision=0, minimum=-1, label=f"Data face (0..{max(len(workspace.data_faces) - 1, 0)}, -1 = none)", scale=2, min_width=120)
        previous = gr.Button("◀ previous", size="sm", scale=1, min_width=60)
        following = gr.Button("next ▶", size="sm", scale=1, min_width=60)
    points_file = gr.File(label="Annotation of the photo (.pts, optional)", file_types=[".pts"], type="filepath", height=150)
    with gr.Row():
        face = CheckedNumber(value=0, precision=0, minimum=0, label="Face", info="numbers are drawn on the photo", min_width=100)
        box = gr.Textbox(label="Face box (optional)", placeholder="x0, y0, x1, y1", info="overrides the face choice", min_width=140)
    landmark = gr.Dropdown(choices=choices, value=choices[DEFAULT_LANDMARK], allow_custom_value=True, label="Landmark", info="pick, type a number or a name, or click a point on the photo", elem_id="landmark-choice")
    version = gr.State(0)
    return FacePanel(photo, example, data_index, points_file, face, box, landmark, version, previous if has_data else None, following if has_data else None)


def _wire_face_panel(panel: FacePanel, workspace: Workspace) -> None:
    """Connect the panel so that every valid change of face or landmark bumps ``version``.

    Each handler first loads and checks the new choice, so an invalid upload,
    box or landmark shows one error message (instead of one per tab) and
    leaves the tabs showing the last valid face. A new photo, example or data
    face also clears the inputs that belonged to the previous one.
    """

    def check(photo, example, data_index, points_file, face, box, landmark) -> None:  # noqa: ANN001
        parse_landmark(landmark, workspace.predictor.scheme)
        source = workspace.resolve(photo, example, data_index, points_file)
        workspace.select(source, face, box)

    @handle_errors
    def photo_uploaded(version, photo, face, box, landmark):  # noqa: ANN001, ANN202
        check(photo, "", -1, None, face, box, landmark)
        return version + 1, "", None

    @handle_errors
    def example_chosen(version, example, face, box, landmark):  # noqa: ANN001, ANN202
        check(None, example, -1, None, face, box, landmark)
        return version + 1, None, None

    @handle_errors
    def choice_changed(version, photo, example, data_index, points_file, face, box, landmark):  # noqa: ANN001, ANN202
        check(photo, example, data_index, points_file, face, box, landmark)
        return version + 1

    @handle_errors
    def data_face_chosen(version, index, offset, face, box, landmark):  # noqa: ANN001, ANN202
        count = len(workspace.data_faces)
        current = -1 if index is None else int(index)
        new_index = min(max(current + offset, 0), count - 1) if count else int(index or 0)
        check(None, "", new_index, None, face, box, landmark)
        return version + 1, new_index, None, "", None

    private = {"api_visibility": "private", "show_progress": "hidden", "concurrency_id": MODEL_EVENTS}
    shared = [panel.face, panel.box, panel.landmark]
    panel.photo.upload(photo_uploaded, [panel.version, panel.photo, *shared], [panel.version, panel.example, panel.points_file], **private)
    panel.example.input(example_chosen, [panel.version, panel.example, *shared], [panel.version, panel.photo, panel.points_file], **private)
    gr.on(
        [panel.points_file.upload, panel.points_file.clear, panel.face.submit, panel.box.submit, panel.landmark.change],
        choice_changed,
        [panel.version, *panel.inputs],
        [panel.version],
        **private,
    )

    data_outputs = [panel.version, panel.data_index, panel.photo, panel.example, panel.points_file]
    offset = gr.State(0)
    panel.data_index.submit(data_face_chosen, [panel.version, panel.data_index, offset, *shared], data_outputs, **private)
    if panel.previous is not None and panel.following is not None:
        back = gr.State(-1)
        forward = gr.State(1)
        panel.previous.click(data_face_chosen, [panel.version, panel.data_index, back, *shared], data_outputs, **private)
        panel.following.click(data_face_chosen, [panel.version, panel.data_index, forward, *shared], data_outputs, **private)


def build_app(workspace: Workspace) -> gr.Blocks:
    """Build the app's Blocks around loaded models; launch it with :func:`launch`."""
    predictor = workspace.predictor
    scheme = predictor.scheme
    downloads = DownloadFolder()

    # Named endpoints: their parameter names are the gradio_client keywords.
    @handle_errors
    def inspect(image, example, data_index, points_file, face, box, landmark, model):  # noqa: ANN001, ANN202
        """Predict one model's landmarks on a face and decode the selected landmark's heatmap three ways."""
        return run_inspect(workspace, downloads, image, example, data_index, points_file, face, box, landmark, model).as_tuple()

    @handle_errors
    def compare(image, example, data_index, points_file, face, box, landmark):  # noqa: ANN001, ANN202
        """Run the structured-loss and the soft-argmax models on the same face and compare them."""
        return run_compare(workspace, image, example, data_index, points_file, face, box, landmark).as_tuple()

    @handle_errors
    def smoothing(image, example, data_index, points_file, face, box, landmark, sigma, window, edge_sigma, edge_weight, smooth_sigma, min_edge_scale, min_std, max_std, preserve_area):  # noqa: ANN001, ANN202, E501
        """Compute a face's edge map, image-aware label covariances and label distributions."""
        parameters = {
            "sigma": sigma,
            "window": window,
            "edge_sigma": edge_sigma,
            "edge_weight": edge_weight,
            "smooth_sigma": smooth_sigma,
            "min_edge_scale": min_edge_scale,
            "min_std": min_std,
            "max_std": max_std,
            "preserve_area": preserve_area,
        }
        return run_smoothing(workspace, image, example, data_index, points_file, face, box, landmark, **parameters).as_tuple()

    @handle_errors
    def lesson(shape, centre_x, centre_y, sigma, distance, weight, temperature, target, start_centre, start_offset, steps, learning_rate, optimiser, step, progress=gr.Progress()):  # noqa: ANN001, ANN202, B008, E501
        """Build a heatmap, the same-soft-argmax presets and the row-training demo of the soft-argmax lesson."""
        result = run_lesson(
            shape, centre_x, centre_y, sigma, distance, weight, temperature, target, start_centre, start_offset, steps, learning_rate, optimiser, step,
            progress=lambda fraction, text: progress(fraction, desc=text),
        )
        return result.as_tuple()

    @handle_errors
    def pick_landmark(summary: dict[str, Any] | None, event: gr.SelectData) -> str:
        """Select the landmark nearest to a click on the Inspect photo."""
        index = nearest_landmark(summary, event.index)
        return gr.skip() if index is None else landmark_choices(scheme)[index]

    # Gradio keeps every upload and every returned image in its cache folder;
    # delete_cache removes this app's files older than an hour, every 15 minutes.
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(header_markdown(workspace), elem_id="app-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="face-panel"):
                panel = build_face_panel(workspace)
            with gr.Column(scale=4):
                with gr.Tabs():
                    with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                        inspect_parts = build_inspect_tab(workspace)
                    with gr.Tab("Compare objectives", id="compare", elem_id="tab-compare"):
                        compare_parts = build_compare_tab(workspace)
                    with gr.Tab("Label smoothing", id="smoothing", elem_id="tab-smoothing"):
                        smoothing_parts = build_smoothing_tab(workspace)
                    with gr.Tab("Soft-argmax lesson", id="lesson", elem_id="tab-lesson"):
                        lesson_parts = build_lesson_tab()

        _wire_face_panel(panel, workspace)
        face_triggers = [panel.version.change]

        gr.on(face_triggers + [inspect_parts.model.change], inspect, panel.inputs + [inspect_parts.model], inspect_parts.outputs, api_name="inspect", show_progress="minimal", concurrency_id=MODEL_EVENTS)
        compared = gr.on(face_triggers, compare, panel.inputs, compare_parts.outputs, api_name="compare", show_progress="minimal", concurrency_id=MODEL_EVENTS)

        # The error plot is hidden when the face has no ground truth to measure against.
        compared.then(lambda summary: gr.Plot(visible=bool(summary and summary.get("ground_truth"))), [compare_parts.summary], [compare_parts.errors], api_visibility="private", show_progress="hidden", concurrency_limit=None)
        sliders = list(smoothing_parts.sliders.values())
        smoothing_triggers = face_triggers + [slider.release for slider in sliders] + [smoothing_parts.preserve_area.input]
        gr.on(smoothing_triggers, smoothing, panel.inputs + sliders + [smoothing_parts.preserve_area], smoothing_parts.outputs, api_name="smoothing", show_progress="minimal", concurrency_id=MODEL_EVENTS)

        lesson_inputs = lesson_parts.inputs
        lesson_triggers = [lesson_parts.train.click, lesson_parts.step.release]
        lesson_triggers += [component.release if isinstance(component, gr.Slider) else component.change for component in lesson_inputs[:7]]
        gr.on(lesson_triggers, lesson, lesson_inputs, lesson_parts.outputs, api_name="lesson", show_progress="minimal", concurrency_id=MODEL_EVENTS)

        # The step slider's range follows the number of training steps.
        lesson_parts.steps.release(lambda steps: gr.update(maximum=int(steps), value=int(steps)), [lesson_parts.steps], [lesson_parts.step], api_visibility="private", concurrency_limit=None)
        inspect_parts.landmarks.select(pick_landmark, [inspect_parts.summary], [panel.landmark], api_visibility="private", concurrency_limit=None)

        # Show the first example and the lesson as soon as the page opens.
        demo.load(lambda version: version + 1, [panel.version], [panel.version], api_visibility="private", concurrency_limit=None)
        demo.load(lesson, lesson_inputs, lesson_parts.outputs, api_visibility="private", concurrency_id=MODEL_EVENTS)
        demo.load(lambda steps: gr.update(maximum=int(steps)), [lesson_parts.steps], [lesson_parts.step], api_visibility="private", concurrency_limit=None)
    return demo


def launch(demo: gr.Blocks, settings: AppSettings, prevent_thread_lock: bool = False, quiet: bool = False) -> Any:
    """Launch the app with the project's limits: upload size, queue, allowed paths, theme and CSS."""
    if not is_loopback(settings.host):
        logger.warning(
            "listening on %s, which is not a loopback address: anyone who can reach this machine can use the app "
            "and upload files to it",
            settings.host,
        )
    # Events of the MODEL_EVENTS group run ``concurrency`` at a time, each with
    # cpu_count // concurrency torch threads (see configure_torch_threads), so
    # the running events together use every core once. Cheap events (a slider
    # range, a click on the photo) have no limit. At most 64 requests wait in
    # the queue; Gradio rejects further ones with "queue is full" instead of
    # holding their uploads and sockets without bound.
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=64)
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=MAX_FILE_SIZE,
        app_kwargs=middleware_arguments(MAX_REQUEST_BODY, f"upload photos of at most {MAX_FILE_SIZE // 2**20} MiB"),
        allowed_paths=[str(ASSETS_DIR)],
        footer_links=["api"],
        show_error=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        theme=THEME,
        css=CSS,
        ssr_mode=False,
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"Launch the {TITLE} web app.")
    parser.add_argument("--host", help="address to listen on (default: EXPLORER_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: EXPLORER_PORT or 7860)")
    parser.add_argument("--checkpoints", help="folder with structured.safetensors and softargmax.safetensors (default: EXPLORER_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--data", help="optional 300-W style folder whose validation faces can be browsed (default: EXPLORER_DATA)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="device for the models (default: CUDA when available)")
    parser.add_argument("--concurrency", type=int, help="events that may run at the same time (default: EXPLORER_CONCURRENCY or 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the models, build the app and serve it until interrupted; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = parse_arguments(argv)
    settings = AppSettings.from_environment(
        host=arguments.host,
        port=arguments.port,
        checkpoints=arguments.checkpoints,
        data=arguments.data,
        device=arguments.device,
        concurrency=arguments.concurrency,
    )
    threads = configure_torch_threads(settings.concurrency)
    logger.info("starting: checkpoints %s, %d torch threads per event, %d concurrent events", settings.checkpoints, threads, settings.concurrency)
    try:
        workspace = load_workspace(settings)
    except CheckpointError as error:
        logger.error("cannot start: %s", error)
        return 2
    demo = build_app(workspace)
    launch(demo, settings)
    logger.info("stopped")
    return 0
