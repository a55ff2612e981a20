"""What a rule is evaluated against: one profile, one request context, one instant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clock import DAY
from ..profile import Profile

if TYPE_CHECKING:
    from ..segments import SegmentRegistry
    from .compiler import Explanation

__all__ = ["Subject"]


class Subject:
    """A profile seen in a context at a time. Segment results are memoized per subject, so
    a segment used by several slots (or nested in several segments) is evaluated once."""

    __slots__ = ("_memo", "context", "now", "profile", "segments", "today")

    def __init__(
        self,
        profile: Profile,
        context: Mapping[str, Any],
        now: float,
        segments: SegmentRegistry | None = None,
    ) -> None:
        self.profile = profile
        self.context = context
        self.now = now
        self.today = int(now // DAY)  # clock.day_of, inlined: this runs per decision
        self.segments = segments
        self._memo: dict[str, bool] | None = None  # made on first use: most subjects need none

    def in_segment(self, name: str) -> bool:
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        result = memo.get(name)
        if result is None:
            if self.segments is None:
                return False
            result = memo[name] = self.segments.test(name, self)
        return result

    def explain_segment(self, name: str) -> Explanation | None:
        """Why this subject is (or is not) in segment ``name``; None without a registry."""
        if self.segments is None:
            return None
        return self.segments.explain(name, self)

    def forget(self) -> None:
        """Drop memoized segment results (after the profile changed)."""
        self._memo = None
