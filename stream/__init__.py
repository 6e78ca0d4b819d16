"""streamrec's streaming side: the Faust app, schemas, settings and tools around it."""

import os

# One BLAS thread per process unless the user says otherwise: on a small machine the
# worker's numpy work (embedding search) ran 5x slower with BLAS threads fighting the
# event loop, onnxruntime and the broker for the cores. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
