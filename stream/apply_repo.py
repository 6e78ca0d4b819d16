"""``python -m streamrec.stream.apply_repo``: apply the Feast feature repo for the settings in the
environment. Run in a child process so that the worker never imports feast."""

from __future__ import annotations

import sys

from streamrec.features.repo import apply_repo
from streamrec.stream.runtime import feature_repo_dir
from streamrec.stream.settings import load_settings


def main() -> int:
    settings = load_settings()
    path = apply_repo(settings.features, settings.redis.effective_url, feature_repo_dir(settings))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
