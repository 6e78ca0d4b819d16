"""Per-user debounce: at most one recommendation list per user per window.

Under a burst of events from one user, the first event is ranked at once; later ones
inside the window are held, each replacing the one before, and the last one held is
released when the window ends. So the list a user finally gets always reflects their
last event (nothing's effect is dropped), while a burst of N events costs 2 rankings
rather than N. Pure logic, no clock of its own: the caller passes ``now`` (seconds).
"""

from __future__ import annotations

from typing import Generic, TypeVar

R = TypeVar("R")


class Debouncer(Generic[R]):
    def __init__(self, window_s: float) -> None:
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.window_s = window_s
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, R] = {}

    def offer(self, user_id: str, request: R, now: float) -> R | None:
        """The request to rank now, or None when it is held for later."""
        if self.window_s == 0:  # no debounce: nothing to remember (one entry per user would grow forever)
            return request
        last = self._last_sent.get(user_id)
        if last is None or now - last >= self.window_s:
            self._held.pop(user_id, None)
            self._last_sent[user_id] = now
            return request
        self._held[user_id] = request
        return None

    def due(self, now: float) -> list[R]:
        """Held requests whose window has ended; each user's window restarts now."""
        ready = [u for u in self._held if now - self._last_sent[u] >= self.window_s]
        for user_id in ready:
            self._last_sent[user_id] = now
        released = [self._held.pop(u) for u in ready]
        self._forget_idle(now)
        return released

    def held_for(self, user_id: str) -> R | None:
        """The request held for ``user_id``, if any."""
        return self._held.get(user_id)

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def remembered(self) -> int:
        """Users with a send time kept (bounded: see ``_forget_idle``)."""
        return len(self._last_sent)

    def _forget_idle(self, now: float) -> None:
        """Drop users whose window has ended and who have nothing held: their next
        request is sent at once either way, so forgetting them changes no decision."""
        if len(self._last_sent) > 2 * len(self._held) + 1024:
            self._last_sent = {u: t for u, t in self._last_sent.items() if now - t < self.window_s or u in self._held}
