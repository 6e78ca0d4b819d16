"""Which onnxruntime wheel fits this machine: ``onnxruntime-gpu`` when ``nvidia-smi``
finds an NVIDIA GPU, else ``onnxruntime``. Never both (they write the same package).

``python -m streamrec.models.ort_package`` prints the package name (the installer reads it);
``--pin`` adds the project's pinned version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

ORT_VERSION = "1.31.1"


def has_nvidia_gpu() -> bool:
    """True when ``nvidia-smi -L`` runs and lists at least one GPU (5 s limit)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return False
    try:
        done = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def onnxruntime_package(pin: bool = False) -> str:
    name = "onnxruntime-gpu" if has_nvidia_gpu() else "onnxruntime"
    return f"{name}=={ORT_VERSION}" if pin else name


if __name__ == "__main__":
    print(onnxruntime_package(pin="--pin" in sys.argv[1:]))
