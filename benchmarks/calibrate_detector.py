"""Measure the Haar-detection to landmark-box mapping on the 300-W training split.

Usage: ``EXPLORER_DATA=../shared/data/300w python benchmarks/calibrate_detector.py``.
Prints the values for ``DETECTOR_BOX_CALIBRATION`` in
``explorer/inference/detection.py``.
"""

import json
import os
import sys

from explorer.core.data import read_image, scan_folder, split_records
from explorer.inference.detection import calibrate_landmark_box


def main() -> int:
    root = os.environ.get("EXPLORER_DATA")
    if not root:
        sys.exit("set EXPLORER_DATA to a folder in 300-W layout (for example ../shared/data/300w)")

    # Every third training face keeps the run under a minute on two cores.
    records = split_records(scan_folder(root), "train")[::3]
    images = [read_image(record.image_path) for record in records]
    calibration = calibrate_landmark_box(images, [record.points for record in records])
    print(json.dumps(calibration | {"faces_tried": len(records)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
