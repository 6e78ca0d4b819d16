"""Commands that need a service which is down name it and say how to start it (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

from streamrec.infra.stack import free_port


def test_recommendations_with_redis_down_names_the_service_and_the_fix() -> None:
    port = free_port()  # nothing listens there
    env = {**os.environ, "STREAMREC_REDIS__URL": f"redis://127.0.0.1:{port}/0"}
    done = subprocess.run([sys.executable, "-m", "streamrec.tools.cli", "recommendations", "42"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"redis is not reachable at 127.0.0.1:{port} (STREAMREC_REDIS__URL" in done.stderr
    assert "`streamrec stack up`" in done.stderr
    assert "Traceback" not in done.stderr
