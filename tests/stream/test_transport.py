from __future__ import annotations


def test_served_partitions_go_to_the_back_of_the_fetch_buffer() -> None:
    from stream.transport import to_back_of_line

    pending = {"click-0": 1, "click-1": 2, "item-0": 3}
    to_back_of_line(pending, ["click-0", "gone"])
    assert list(pending) == ["click-1", "item-0", "click-0"]
    to_back_of_line(pending, ["click-1", "item-0"])
    assert list(pending) == ["click-0", "click-1", "item-0"] and pending["item-0"] == 3
