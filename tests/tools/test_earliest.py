"""``--earliest FRACTION``: a validation window that never reaches the final test events."""

from __future__ import annotations

import pandas as pd

from streamrec.models.datasets import Dataset
from streamrec.tools.models_cli import earliest


def test_earliest_keeps_the_first_events_by_time_not_by_file_order() -> None:
    frame = pd.DataFrame({"user_id": list("abcde"), "item_id": list("vwxyz"), "ts": [50, 10, 40, 20, 30]})
    cut = earliest(Dataset("toy", frame, explicit=False), 0.6)
    assert cut.interactions["ts"].tolist() == [10, 20, 30]
    assert cut.name == "toy-earliest0.6" and len(frame) == 5
