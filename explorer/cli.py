"""Command line: ``python -m explorer {train,evaluate,report,data} ...``.

Each subcommand imports its heavy modules only when it runs, so ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


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
        help="train a heatmap model (resumes when --out already holds a run)",
        description="Train a heatmap model on a 300-W layout folder. Running the same command again "
        "resumes from the last complete epoch in --out.",
    )
    parser.add_argument("--objective", choices=("structured", "softargmax", "star"), default="structured",
                        help="training loss (default: structured)")
    parser.add_argument("--labels", choices=("image-aware", "isotropic"), default="image-aware",
                        help="label distribution for the structured loss (default: image-aware)")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig values; command-line options override it")
    parser.add_argument("--data", help="300-W layout folder (default: $EXPLORER_DATA)")
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and logs")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--batch-size", type=int, help="images per step")
    parser.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    parser.add_argument("--seed", type=int, help="random seed (the same seed repeats a run)")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--max-train-faces", type=int, help="use only the first N training faces (for smoke runs)")
    parser.add_argument("--max-val-faces", type=int, help="use only the first N validation faces")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=_run_train)


def _data_root(value: str | None) -> str:
    import os

    root = value or os.environ.get("EXPLORER_DATA")
    if not root:
        raise SystemExit("error: no data folder; pass --data DIR or set EXPLORER_DATA to a folder in 300-W layout")
    if not Path(root).is_dir():
        raise SystemExit(f"error: data folder not found: {root}")
    return root


def _run_train(args: argparse.Namespace) -> int:
    from explorer.core.training import NonFiniteLossError, TrainConfig, train

    values = {}
    if args.config:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"error: cannot read config {args.config}: {error}") from error
    values["data"] = _data_root(args.data or values.get("data"))
    values["objective"] = args.objective
    values["labels"] = args.labels
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "num_workers": args.workers, "threads": args.threads,
        "max_train_faces": args.max_train_faces, "max_val_faces": args.max_val_faces,
    }
    values.update({key: value for key, value in overrides.items() if value is not None})

    try:
        config = TrainConfig.from_dict(values)
        command = "python -m explorer " + shlex.join(args.argv)
        trainer = train(config, args.out, command=command, progress=not args.no_progress)
    except NonFiniteLossError as error:
        logger.error("%s", error)
        return 3
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    logger.info("done: best validation NME %.3f%% at epoch %d in %s", trainer.best_nme, trainer.best_epoch, args.out)
    return 0


# ------------------------------------------------------------------- evaluate


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a 300-W layout folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help=".safetensors checkpoint with its card")
    parser.add_argument("--data", help="300-W layout folder (default: $EXPLORER_DATA)")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="which faces of the folder to evaluate (default: all)")
    parser.add_argument("--decoder", choices=("argmax", "refined", "soft-argmax"),
                        help="heatmap decoder (default: the one the checkpoint's objective implies)")
    parser.add_argument("--box", choices=("ground-truth", "detector"), default="ground-truth",
                        help="crop from the ground-truth points (300-W protocol) or from a face detector")
    parser.add_argument("--threshold", type=float, default=10.0, help="FR and AUC threshold, percent NME (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--ced", type=Path, help="write the cumulative error distribution plot to this PNG")
    parser.add_argument("--per-landmark", type=Path, help="write the per-landmark mean error (percent) to this JSON file")
    parser.add_argument("--batch-size", type=int, default=32, help="faces per forward pass")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from explorer.core.checkpoints import CheckpointError
    from explorer.evaluate import evaluate_checkpoint

    try:
        result, card = evaluate_checkpoint(
            args.checkpoint, _data_root(args.data), split=args.split, decoder=args.decoder, box=args.box,
            threshold=args.threshold, batch_size=args.batch_size, device=args.device,
        )
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error

    summary = result.summary() | {"split": args.split, "box": args.box, "checkpoint": str(args.checkpoint)}
    if args.ced:
        from explorer.plots import save_ced_plot

        save_ced_plot({f"{card.get('objective', 'model')} ({result.decoder})": result.errors}, args.ced, args.threshold)
        summary["ced_plot"] = str(args.ced)
    if args.per_landmark:
        from explorer.core.landmarks import scheme_for_count

        means = result.landmark_errors.mean(axis=0)
        scheme = scheme_for_count(len(means))
        rows = [{"index": index, "name": scheme.names[index], "mean_error": round(float(value), 4)} for index, value in enumerate(means)]
        args.per_landmark.write_text(json.dumps(rows, indent=2) + "\n")
        summary["per_landmark"] = str(args.per_landmark)

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
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by 'explorer train'")
    parser.add_argument("--data", help="300-W layout folder for the CED curves (default: $EXPLORER_DATA)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for results.md and figures (default: docs)")
    parser.add_argument("--target-nme", type=float, help="validation NME (percent) for the convergence comparison")
    parser.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from explorer.report import write_report

    path = write_report(args.runs, _data_root(args.data), args.out, target_nme=args.target_nme)
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
