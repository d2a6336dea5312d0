"""Turn training runs into ``results.md`` with a convergence plot, CED curves and tables.

Every number in the report is measured here, on the validation split of the
data folder, from each run's ``best.safetensors`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from explorer.core.checkpoints import load_model
from explorer.core.data import SPLIT_RULE, LandmarkDataset, scan_folder, split_records
from explorer.core.evaluation import DECODERS, DEFAULT_THRESHOLD, EvaluationResult, evaluate_model
from explorer.core.landmarks import scheme_for_count
from explorer.plots import save_ced_plot, save_convergence_plot

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """One training run: its label, card, per-epoch history and validation results per decoder."""

    folder: Path
    label: str
    card: dict[str, Any]
    history: list[dict[str, Any]]
    results: dict[str, EvaluationResult]

    @property
    def decoder(self) -> str:
        return self.card["decoder"]

    @property
    def objective(self) -> str:
        return self.card["objective"]


def run_label(card: dict[str, Any]) -> str:
    """Return a short human-readable name for a run, such as ``structured (image-aware)``."""
    objective = card["objective"]
    if objective == "structured":
        return f"structured ({card.get('labels') or 'isotropic'})"
    return {"softargmax": "soft-argmax", "star": "STAR"}.get(objective, objective)


def check_run_folder(folder: Path) -> None:
    """Raise ValueError unless ``folder`` has the files of a run written by ``explorer train``.

    Checked for every run before any is evaluated, so a wrong folder fails at once.
    """
    if not folder.is_dir():
        kind = "is a file" if folder.exists() else "not found"
        raise ValueError(f"run folder {folder} {kind}; pass folders written by 'explorer train'")
    if not (folder / "best.safetensors").is_file():
        raise ValueError(f"{folder} has no best.safetensors; pass folders written by 'explorer train' "
                         "that finished at least one epoch")
    read_history(folder)


def read_history(folder: Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` of a run folder, one dict per epoch."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder} has no metrics.jsonl; pass folders written by 'explorer train'")
    history = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not valid JSON ({error}); restore the file or rerun the training") from None
        if not isinstance(row, dict) or not {"epoch", "nme", "seconds"} <= set(row):
            raise ValueError(f"{path} line {number} lacks the epoch, nme and seconds of an epoch; restore the file or rerun the training")
        history.append(row)
    if not history:
        raise ValueError(f"{path} records no epoch; let the run finish at least one epoch")
    return history


def epochs_to_reach(history: list[dict[str, Any]], target: float) -> int | None:
    """Return the first epoch whose validation NME is at or below ``target``, or None."""
    for row in history:
        if row["nme"] <= target:
            return int(row["epoch"])
    return None


def summarise_run(folder: Path, data_root: str | Path, device: str = "cpu") -> RunSummary:
    """Evaluate a run's best checkpoint on the validation split with every decoder."""
    model, card = load_model(folder / "best.safetensors", device=device)
    records = split_records(scan_folder(data_root), "val")
    if not records:
        raise ValueError(f"the validation split of {data_root} is empty; pass a --data folder with annotated faces")
    if records[0].points.shape[0] != model.config["num_landmarks"]:
        raise ValueError(
            f"{folder / 'best.safetensors'} predicts {model.config['num_landmarks']} landmarks but {data_root} is "
            f"annotated with {records[0].points.shape[0]}; pass --data with the landmark scheme the run was trained on."
        )
    loader = DataLoader(LandmarkDataset(records, input_size=int(model.config["input_size"]), augmentation=None), batch_size=32)
    results = evaluate_model(model, loader, decoders=DECODERS, temperature=float(card.get("temperature") or 1.0), device=device,
                             progress=True)
    return RunSummary(folder, run_label(card), card, read_history(folder), results)


def _region_errors(result: EvaluationResult) -> dict[str, float]:
    scheme = scheme_for_count(result.landmark_errors.shape[1])
    means = result.landmark_errors.mean(axis=0)
    return {region: float(means[start:stop].mean()) for region, start, stop in scheme.regions}


def _accuracy_table(runs: list[RunSummary]) -> list[str]:
    lines = [
        "| model | decoder | NME (%) | FR@10 (%) | AUC@10 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for run in runs:
        for decoder in DECODERS:
            result = run.results[decoder]
            mark = " (trained for)" if decoder == run.decoder else ""
            lines.append(f"| {run.label} | {decoder}{mark} | {result.nme:.3f} | {result.fr:.2f} | {result.auc:.4f} |")
    return lines


def _convergence_table(runs: list[RunSummary], target: float) -> list[str]:
    reached = {run.label: epochs_to_reach(run.history, target) for run in runs}
    references = [label for label in ("soft-argmax", "STAR") if label in reached]
    header = "| model | epochs to NME ≤ {:.2f}% |".format(target) + "".join(f" speed-up vs {label} |" for label in references)
    lines = [header, "| --- | ---: |" + " ---: |" * len(references)]
    for run in runs:
        epochs = reached[run.label]
        cells = [str(epochs) if epochs is not None else "not reached"]
        for label in references:
            reference = reached[label]
            cells.append(f"{reference / epochs:.2f}×" if epochs and reference else "n/a")
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    return lines


def _default_target(runs: list[RunSummary]) -> float:
    """Pick the lowest NME every run reaches, rounded up to 0.05 percent."""
    worst_best = max(min(row["nme"] for row in run.history) for run in runs)
    return math.ceil(worst_best * 20.0) / 20.0


def write_report(
    run_folders: list[Path], data_root: str | Path, out_dir: str | Path = "docs", target_nme: float | None = None
) -> Path:
    """Evaluate the runs, draw the figures and write ``results.md``; return its path."""
    out_dir = Path(out_dir)
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    runs = [summarise_run(Path(folder), data_root, device) for folder in run_folders]

    # Runs of the same objective and labels (for example two smoothing
    # settings) get their folder names appended to their labels.
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} [{run.folder.name}]"
    target = target_nme if target_nme is not None else _default_target(runs)

    convergence_png = save_convergence_plot({run.label: run.history for run in runs}, figures / "convergence.png", target)
    ced_png = save_ced_plot({f"{run.label}, {run.decoder}": run.results[run.decoder].errors for run in runs},
                            figures / "ced.png", DEFAULT_THRESHOLD)

    first = runs[0]
    data = first.card["data"]
    lines = [
        "# Results",
        "",
        f"Measured on {datetime.now(timezone.utc).date().isoformat()} by `python -m explorer report "
        + " ".join(str(folder) for folder in run_folders) + "`.",
        "",
        f"Validation split: {data['val_faces']} faces of `{data['root']}` ({', '.join(data['folders'])}); "
        f"training split: {data['train_faces']} faces. Split rule: {SPLIT_RULE}. "
        "Crops come from the ground-truth point box (the 300-W protocol). NME is the mean point error "
        "divided by the outer-eye-corner distance, in percent; FR@10 is the percentage of faces with "
        "NME > 10%; AUC@10 is the area under the cumulative error curve on [0, 10%], divided by 10%.",
        "",
        "All models share the network, data, augmentation, epochs and seed; the table rows differ only in "
        "the training objective and, for the structured loss, the label distribution.",
        "",
        "## Accuracy",
        "",
        *_accuracy_table(runs),
        "",
        "The decoder marked *trained for* is the one each model was selected with: refined argmax for the "
        "structured loss, soft-argmax for the soft-argmax and STAR losses.",
        "",
        f"![CED curves]({ced_png.relative_to(out_dir)})",
        "",
        "## Convergence",
        "",
        *_convergence_table(runs, target),
        "",
        f"The target NME ({target:.2f}%) is the lowest validation NME that every run reaches. The speed-up is "
        "the reference's epochs divided by the model's epochs; above 1 means the model got there sooner. "
        "Yang & Yeh (ICCV 2025) report 2.2× faster convergence than STAR on WFLW.",
        "",
        f"![validation NME per epoch]({convergence_png.relative_to(out_dir)})",
        "",
    ]

    # Image-aware versus isotropic labels, per face region.
    structured = [run for run in runs if run.objective == "structured"]
    isotropic = next((run for run in structured if run.card.get("labels") == "isotropic"), None)
    aware_runs = [run for run in structured if run.card.get("labels") == "image-aware"]
    if isotropic and aware_runs:
        reference = _region_errors(isotropic.results["refined"])
        header = "| region | isotropic |" + "".join(f" {run.label} | difference |" for run in aware_runs)
        lines += [
            "## Image-aware versus isotropic labels",
            "",
            "Mean normalised error per face region (percent), refined-argmax decoder. "
            "A negative difference means the image-aware labels lowered the error.",
            "",
            header,
            "| --- | ---: |" + " ---: | ---: |" * len(aware_runs),
        ]
        aware_regions = [_region_errors(run.results["refined"]) for run in aware_runs]
        for region in reference:
            cells = "".join(f" {regions[region]:.3f} | {regions[region] - reference[region]:+.3f} |" for regions in aware_regions)
            lines.append(f"| {region} | {reference[region]:.3f} |{cells}")
        lines.append("")
        for run in aware_runs:
            change = run.results["refined"].nme - isotropic.results["refined"].nme
            smoothing = ", ".join(f"{key}={value}" for key, value in (run.card.get("smoothing") or {}).items())
            lines.append(f"- {run.label} ({smoothing}): validation NME changes by {change:+.3f} percentage points.")
        lines.append("")

    lines += [
        "## Runs",
        "",
        "| model | best epoch | epochs | seconds per epoch (median) | command |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        seconds = float(np.median([row["seconds"] for row in run.history]))
        lines.append(f"| {run.label} | {run.card['epoch']} | {len(run.history)} | {seconds:.1f} | `{run.card['command']}` |")
    lines += [
        "",
        "Seconds per epoch are wall-clock times of training and validation as logged by each run. Runs that "
        "shared the machine with other jobs were slower, so the column is a record of the runs, not a speed "
        "comparison between objectives; `benchmarks/RESULTS.md` measures loss cost and throughput separately.",
        "",
    ]

    path = out_dir / "results.md"
    path.write_text("\n".join(lines))
    logger.info("wrote %s", path)
    return path
