"""Server-side time of the Inspect tab's handler on a 1-megapixel photo, without HTTP.

Usage: ``python benchmarks/inspect_handler.py [--repeats 20] [--threads 1]``.

``benchmarks/app_inspect.py`` times a whole ``gradio_client`` request, which
adds the upload, Gradio's pre- and post-processing and the download of every
output file. This script calls :func:`explorer.app.inspect_tab.run_inspect`
directly with the models loaded once, to show how much of a request is the
explorer's own work. Two cases: a new photo each call (face detection, the
model and every figure), and the same photo with another landmark (the
cached detection and prediction are reused, as when a user browses
landmarks).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import cv2
import torch

from common import REPOSITORY, checkpoint_paths, machine, print_json, summarise, time_calls, warn_if_busy

EXAMPLE = REPOSITORY / "explorer" / "assets" / "examples" / "einstein.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, as the app gives each request on 2 cores")
    args = parser.parse_args()
    warn_if_busy()
    torch.set_num_threads(args.threads)

    from explorer.app.common import DownloadFolder
    from explorer.app.inspect_tab import run_inspect
    from explorer.app.sources import Workspace
    from explorer.inference.predictor import Predictor

    # Distinct files, so that every "new photo" call misses the app's caches.
    image = cv2.imread(str(EXAMPLE))
    image = cv2.resize(image, (893, 1120), interpolation=cv2.INTER_AREA)
    folder = Path(tempfile.mkdtemp(prefix="inspect-handler-"))
    photos = []
    for index in range(args.repeats + 4):
        path = folder / f"photo_{index}.jpg"
        cv2.imwrite(str(path), image)
        photos.append(str(path))

    workspace = Workspace(Predictor(list(checkpoint_paths().values())))
    downloads = DownloadFolder()
    new_photos = iter(photos)
    landmarks = itertools.cycle(["36", "45", "30", "8"])

    def new_photo() -> None:
        run_inspect(workspace, downloads, next(new_photos), None, -1, None, 0, "", "36", "structured")

    def same_photo() -> None:
        run_inspect(workspace, downloads, photos[0], None, -1, None, 0, "", next(landmarks), "structured")

    print_json({
        "machine": machine() | {"command": f"python benchmarks/inspect_handler.py --repeats {args.repeats} --threads {args.threads}"},
        "photo": {"width": 893, "height": 1120},
        "new_photo": summarise(time_calls(new_photo, args.repeats)),
        "same_photo_other_landmark": summarise(time_calls(same_photo, args.repeats)),
    })


if __name__ == "__main__":
    main()
