"""``python -m streamrec.stream.prepare_model``: make sure a verified model is promoted in the
registry (training a quick default on MovieLens when there is none). Run in a child
process so that the worker never imports torch."""

from __future__ import annotations

import sys

from streamrec.models.pipeline import ensure_default_model
from streamrec.stream.settings import load_settings


def main() -> int:
    print(ensure_default_model(load_settings().models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
