"""Launch the annotation-ambiguity explorer web app on http://127.0.0.1:7860.

Options: ``python app.py --help``. The environment variables EXPLORER_CHECKPOINTS,
EXPLORER_DATA, EXPLORER_HOST, EXPLORER_PORT, EXPLORER_CONCURRENCY and
EXPLORER_DEVICE set the same values.
"""

import sys

from explorer.app.main import main

if __name__ == "__main__":
    sys.exit(main())
