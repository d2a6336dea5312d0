"""The ``data`` commands: ``data show`` draws a contact sheet, ``data check`` validates a data folder.

Register them on the top-level parser with :func:`add_data_commands`; each
command stores its function in ``args.handler``, which returns the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from explorer.cli import check_output_file, non_negative_int, positive_int

# Limits of the contact sheet, so a mistyped size fails at once instead of
# allocating many gigabytes: one tile and the whole RGB sheet, in pixels.
MAX_TILE_SIZE = 2048
MAX_SHEET_PIXELS = 64_000_000

_DATA_HELP = "folder in 300-W layout: NAME.jpg + NAME.pts pairs in any sub-folders (default: $EXPLORER_DATA)"


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data show`` and ``data check`` to ``subparsers`` and return the ``data`` parser."""
    data_parser = subparsers.add_parser("data", help="inspect and validate landmark data folders")
    commands = data_parser.add_subparsers(dest="data_command", required=True)

    show = commands.add_parser(
        "show",
        help="draw augmented samples with their points into a PNG grid",
        description="Draw dataset samples, augmented as in training, with their landmarks coloured by region.",
    )
    show.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    show.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="output PNG file")
    show.add_argument("--count", type=positive_int, default=16, metavar="N",
                      help="number of faces on the sheet, at most the split's size (default: 16)")
    show.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                      help="seed that picks the faces and their augmentation (default: 0)")
    show.add_argument("--subset", choices=("train", "val", "all"), default="train", help="split to draw from (default: train)")
    show.add_argument("--input-size", type=positive_int, default=128, metavar="PIXELS", help="crop side in pixels (default: 128)")
    show.add_argument("--tile-size", type=positive_int, default=256, metavar="PIXELS",
                      help=f"side of each face on the sheet in pixels, 16 to {MAX_TILE_SIZE} (default: 256)")
    show.add_argument("--no-augment", action="store_true", help="draw the plain crops, without augmentation")
    show.set_defaults(handler=run_data_show)

    check = commands.add_parser(
        "check",
        help="validate every annotation and image and print the split sizes",
        description="Scan a data folder, print every invalid file, the faces per folder and the train/val "
        "split sizes. Exits with status 1 when any file is invalid.",
    )
    check.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    check.add_argument("--expected-count", type=positive_int, metavar="N", help="required points per face (default: the most common count)")
    check.add_argument("--headers-only", action="store_true", help="read only image headers instead of decoding every image")
    check.set_defaults(handler=run_data_check)
    return data_parser


def _resolve_data_root(value: str | None) -> Path | None:
    root = value or os.environ.get("EXPLORER_DATA")
    if not root:
        print("error: no data folder; pass --data DIR or set EXPLORER_DATA to a folder in 300-W layout", file=sys.stderr)
        return None
    if Path(root).exists() and not Path(root).is_dir():
        print(f"error: data folder {root} is a file; pass the folder that contains the NAME.jpg + NAME.pts pairs", file=sys.stderr)
        return None
    if not Path(root).is_dir():
        print(f"error: data folder not found: {root}", file=sys.stderr)
        return None
    return Path(root)


def run_data_show(args: argparse.Namespace) -> int:
    """Write the contact sheet of ``data show``; return the exit status."""
    from explorer.core.contact_sheet import write_contact_sheet
    from explorer.core.data import DatasetError, LandmarkDataset, scan_folder, split_records
    from explorer.core.transforms import Augmentation

    root = _resolve_data_root(args.data)
    if root is None:
        return 2
    if args.count <= 0:
        print(f"error: --count must be a positive number of faces, got {args.count}", file=sys.stderr)
        return 2
    if not 16 <= args.tile_size <= MAX_TILE_SIZE:
        print(f"error: --tile-size must be 16 to {MAX_TILE_SIZE} pixels, got {args.tile_size}", file=sys.stderr)
        return 2
    if args.count * args.tile_size**2 > MAX_SHEET_PIXELS:
        print(f"error: --count {args.count} faces of --tile-size {args.tile_size} pixels exceed the "
              f"{MAX_SHEET_PIXELS:,}-pixel limit of a sheet; lower --count or --tile-size", file=sys.stderr)
        return 2
    check_output_file(args.out, "--out", ".png", "sheet.png")

    try:
        records = split_records(scan_folder(root), args.subset)
    except DatasetError as error:
        print(f"error: {error}\nrun 'data check' for the full report", file=sys.stderr)
        return 1
    if not records:
        print(f"error: the {args.subset} split of {root} is empty; pass --subset all to draw from every face", file=sys.stderr)
        return 1

    augmentation = None if args.no_augment else Augmentation()
    try:
        dataset = LandmarkDataset(records, input_size=args.input_size, augmentation=augmentation, seed=args.seed)
        path = write_contact_sheet(dataset, args.out, count=args.count, seed=args.seed, tile_size=args.tile_size)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


def run_data_check(args: argparse.Namespace) -> int:
    """Validate a data folder for ``data check``; return 1 when any file is invalid."""
    from explorer.core.data import SPLIT_RULE, DatasetError, split_records, validate_folder

    root = _resolve_data_root(args.data)
    if root is None:
        return 2

    try:
        records, problems = validate_folder(root, expected_count=args.expected_count, decode_images=not args.headers_only)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    for problem in problems:
        print(f"invalid: {problem}")
    if not records:
        print(f"error: no valid annotated faces under {root}; expected NAME.jpg + NAME.pts pairs", file=sys.stderr)
        return 1

    # Faces per folder, then the split.
    print(f"{len(records)} valid faces with {len(records[0].points)} points under {root}")
    for source, count in sorted(Counter(record.source for record in records).items()):
        print(f"  {source}: {count}")
    train = split_records(records, "train")
    val = split_records(records, "val")
    print(f"split: train {len(train)}, val {len(val)} ({SPLIT_RULE})")

    if problems:
        print(f"{len(problems)} invalid file(s); the split above leaves them out", file=sys.stderr)
        return 1
    return 0
