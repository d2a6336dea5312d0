"""Command line: ``python -m explorer {train,evaluate,report,data} ...``.

Each subcommand imports its heavy modules only when it runs, so ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


# ------------------------------------------------------------ option checks


def positive_int(text: str) -> int:
    """Parse an option value that must be an integer of at least 1."""
    value = _parse_number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """Parse an option value that must be an integer of at least 0."""
    value = _parse_number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """Parse an option value that must be a finite number above 0."""
    value = _parse_number(text, float, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def _parse_number(text: str, kind: type, description: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None


def check_output_file(path: Path, option: str, suffix: str | None = None, example: str = "out.json") -> None:
    """Exit with an error when ``path`` is a folder, lacks ``suffix`` or lies under a file.

    Called before any slow work starts. A folder that cannot be created for
    other reasons, such as permissions, still fails when the file is written.
    """
    if path.is_dir():
        raise SystemExit(f"error: {option} {path} is a folder; pass a file path such as {path / example}")
    if suffix and path.suffix.lower() != suffix:
        raise SystemExit(f"error: {option} {path} must end in {suffix}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SystemExit(f"error: {option} {path}: {parent} is a file, not a folder; choose another path")
            break


def check_output_folder(path: Path, option: str) -> None:
    """Exit with an error when ``path`` or one of its parents is a file, before any slow work starts."""
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise SystemExit(f"error: {option} {path}: {folder} is a file, not a folder; choose another path")
            break


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


# ---------------------------------------------------------------------- train


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a heatmap model (resumes when --out already contains a run)",
        description="Train a heatmap model on a 300-W layout folder. Running the same command again "
        "resumes from the last complete epoch in --out.",
    )
    parser.add_argument("--objective", choices=("structured", "softargmax", "star"), default="structured",
                        help="training loss (default: structured)")
    parser.add_argument("--labels", choices=("image-aware", "isotropic"), default="image-aware",
                        help="label distribution for the structured loss (default: image-aware)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="JSON object of TrainConfig values, such as configs/cpu.json; command-line options override it")
    parser.add_argument("--data", metavar="DIR", help="300-W layout folder (default: $EXPLORER_DATA)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder for checkpoints and logs")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="number of epochs (default: the config's, else 40)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="images per optimiser step (default: the config's, else 32)")
    parser.add_argument("--lr", type=positive_float, metavar="RATE",
                        help="peak learning rate of AdamW, per step (default: the config's, else 0.002)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N",
                        help="random seed; the same seed repeats a run (default: the config's, else 0)")
    parser.add_argument("--workers", type=non_negative_int, metavar="N",
                        help="DataLoader worker processes; 0 loads in the main process (default: the config's, else 2)")
    parser.add_argument("--threads", type=non_negative_int, metavar="N",
                        help="torch CPU threads; 0 keeps torch's default (default: the config's, else 0)")
    parser.add_argument("--max-train-faces", type=non_negative_int, metavar="N",
                        help="use only the first N training faces, for smoke runs; 0 uses all (default: 0)")
    parser.add_argument("--max-val-faces", type=non_negative_int, metavar="N",
                        help="use only the first N validation faces; 0 uses all (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=_run_train)


def _data_root(value: str | None) -> str:
    import os

    root = value or os.environ.get("EXPLORER_DATA")
    if not root:
        raise SystemExit("error: no data folder; pass --data DIR or set EXPLORER_DATA to a folder in 300-W layout")
    if Path(root).exists() and not Path(root).is_dir():
        raise SystemExit(f"error: data folder {root} is a file; pass the folder that contains the NAME.jpg + NAME.pts pairs")
    if not Path(root).is_dir():
        raise SystemExit(f"error: data folder not found: {root}")
    return root


# Range checks of TrainConfig values read from --config, by key. The options
# that set the same values check them when they are parsed.
_CONFIG_RANGES = {
    "epochs": positive_int, "batch_size": positive_int, "lr": positive_float, "seed": non_negative_int,
    "num_workers": non_negative_int, "threads": non_negative_int,
    "max_train_faces": non_negative_int, "max_val_faces": non_negative_int,
}


def _read_config(path: Path) -> dict[str, Any]:
    """Read a --config file and check the type of each TrainConfig value in it."""
    import dataclasses

    from explorer.core.training import TrainConfig

    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: cannot read config {path}: {error}") from error
    if not isinstance(values, dict):
        raise SystemExit(f"error: config {path} must contain a JSON object such as {{\"epochs\": 40}}, "
                         f"got a JSON {type(values).__name__}")

    # The type each key needs is the type of its default; "data" has none.
    expected: dict[str, type] = {"data": str}
    for item in dataclasses.fields(TrainConfig):
        if item.default is not dataclasses.MISSING:
            expected[item.name] = type(item.default)
        elif item.default_factory is not dataclasses.MISSING:
            expected[item.name] = type(item.default_factory())
    names = {int: "an integer", float: "a number", str: "a string", dict: "a JSON object"}
    for key, value in values.items():
        kind = expected.get(key)
        if kind is None:
            continue  # TrainConfig.from_dict lists unknown keys with the valid ones.
        allowed = (int, float) if kind is float else (kind,)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise SystemExit(f"error: config {path}: {key!r} must be {names[kind]}, got {json.dumps(value)}")
        if key in _CONFIG_RANGES:
            try:
                _CONFIG_RANGES[key](str(value))
            except argparse.ArgumentTypeError as error:
                raise SystemExit(f"error: config {path}: {key!r} {error}") from None
    return values


def _check_sections(config: Any, source: Path | None) -> None:
    """Build the model, loss, label smoothing and augmentation settings once, so invalid values fail before data loads."""
    from explorer.core.losses import build_loss
    from explorer.core.models import build_model
    from explorer.core.smoothing import SmoothingParams
    from explorer.core.transforms import AugmentationConfig

    builders = {
        "model": lambda values: build_model(dict(values)),
        "loss": lambda values: build_loss(config.objective, **values),
        "smoothing": lambda values: SmoothingParams(**values),
        "augmentation": lambda values: AugmentationConfig(**values),
    }
    for key, build in builders.items():
        try:
            build(getattr(config, key))
        except (TypeError, ValueError) as error:
            raise SystemExit(f"error: config {source or ''}: invalid {key!r} settings: {error}") from None


def _run_train(args: argparse.Namespace) -> int:
    from explorer.core.training import NonFiniteLossError, TrainConfig, train

    values = _read_config(args.config) if args.config else {}
    values["data"] = _data_root(args.data or values.get("data"))
    values["objective"] = args.objective
    values["labels"] = args.labels
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "num_workers": args.workers, "threads": args.threads,
        "max_train_faces": args.max_train_faces, "max_val_faces": args.max_val_faces,
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    check_output_folder(args.out, "--out")

    try:
        config = TrainConfig.from_dict(values)
        _check_sections(config, args.config)
        command = "python -m explorer " + shlex.join(args.argv)
        trainer = train(config, args.out, command=command, progress=not args.no_progress)
    except NonFiniteLossError as error:
        logger.error("%s", error)
        return 3
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}") from error
    logger.info("done: best validation NME %.3f%% at epoch %d in %s", trainer.best_nme, trainer.best_epoch, args.out)
    return 0


# ------------------------------------------------------------------- evaluate


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a 300-W layout folder")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help=".safetensors checkpoint written by 'explorer train' (its card is embedded)")
    parser.add_argument("--data", metavar="DIR", help="300-W layout folder (default: $EXPLORER_DATA)")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="which faces of the folder to evaluate (default: all)")
    parser.add_argument("--decoder", choices=("argmax", "refined", "soft-argmax"),
                        help="heatmap decoder (default: the one the checkpoint's objective implies)")
    parser.add_argument("--box", choices=("ground-truth", "detector"), default="ground-truth",
                        help="crop from the ground-truth points (300-W protocol) or from a face detector (default: ground-truth)")
    parser.add_argument("--threshold", type=positive_float, default=10.0, metavar="PERCENT",
                        help="FR and AUC threshold, in percent NME (default: 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--ced", type=Path, metavar="FILE.png", help="write the cumulative error distribution plot to this PNG file")
    parser.add_argument("--per-landmark", type=Path, metavar="FILE.json",
                        help="write the per-landmark mean error (percent NME) to this JSON file")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="faces per forward pass (default: 32)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device for the model (default: cuda when available)")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from explorer.core.checkpoints import CheckpointError
    from explorer.evaluate import evaluate_checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but CUDA is not available; pass --device cpu")
    if args.ced:
        check_output_file(args.ced, "--ced", ".png", "ced.png")
    if args.per_landmark:
        check_output_file(args.per_landmark, "--per-landmark")
    data_root = _data_root(args.data)

    try:
        result, card = evaluate_checkpoint(
            args.checkpoint, data_root, split=args.split, decoder=args.decoder, box=args.box,
            threshold=args.threshold, batch_size=args.batch_size, device=args.device,
        )
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error

    summary = result.summary() | {"split": args.split, "box": args.box, "checkpoint": str(args.checkpoint)}
    try:
        if args.ced:
            from explorer.plots import save_ced_plot

            save_ced_plot({f"{card.get('objective', 'model')} ({result.decoder})": result.errors}, args.ced, args.threshold)
            summary["ced_plot"] = str(args.ced)
        if args.per_landmark:
            from explorer.core.landmarks import scheme_for_count

            means = result.landmark_errors.mean(axis=0)
            scheme = scheme_for_count(len(means))
            rows = [{"index": index, "name": scheme.names[index], "mean_error": round(float(value), 4)}
                    for index, value in enumerate(means)]
            args.per_landmark.parent.mkdir(parents=True, exist_ok=True)
            args.per_landmark.write_text(json.dumps(rows, indent=2) + "\n")
            summary["per_landmark"] = str(args.per_landmark)
    except OSError as error:
        raise SystemExit(f"error: cannot write the evaluation output: {error}") from error

    if args.json:
        print(json.dumps(summary))
    else:
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


# --------------------------------------------------------------------- report


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="turn training runs into docs/results.md with figures")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run folders written by 'explorer train' (each needs best.safetensors and metrics.jsonl)")
    parser.add_argument("--data", metavar="DIR", help="300-W layout folder for the CED curves (default: $EXPLORER_DATA)")
    parser.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                        help="folder for results.md and figures/ (default: docs)")
    parser.add_argument("--target-nme", type=positive_float, metavar="PERCENT",
                        help="validation NME, in percent, for the convergence comparison "
                        "(default: the lowest NME that every run reaches)")
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from explorer.core.checkpoints import CheckpointError
    from explorer.report import check_run_folder, write_report

    check_output_folder(args.out, "--out")
    data_root = _data_root(args.data)
    try:
        for folder in args.runs:
            check_run_folder(folder)
        path = write_report(args.runs, data_root, args.out, target_nme=args.target_nme)
    except (CheckpointError, ValueError, OSError) as error:
        raise SystemExit(f"error: {error}") from error
    print(path)
    return 0


# ----------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="explorer", description="Annotation-ambiguity explorer for facial-landmark heatmaps.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_report(subparsers)

    from explorer.data_cli import add_data_commands
    from explorer.predict_cli import add_predict_command

    add_data_commands(subparsers)
    add_predict_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _configure_logging(args.verbose)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
