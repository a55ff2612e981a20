"""The admin form of a :class:`~persona_wagtail.models.Segment`."""

from __future__ import annotations

from typing import Any

from wagtail.admin.forms import WagtailAdminModelForm

__all__ = ["SegmentForm"]


class SegmentForm(WagtailAdminModelForm):
    """Saves only what compiles: :meth:`Segment.clean` compiles the rule together with every
    other segment, and its errors appear at the field they concern."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rule = self.fields.get("rule")
        if rule is not None and self.instance.pk is not None:
            # lets the live check tell this segment's own name from another's
            rule.widget.attrs["data-segment-pk"] = str(self.instance.pk)

    def clean_name(self) -> str:
        return (self.cleaned_data.get("name") or "").strip()

    def clean_rule(self) -> Any:
        rule = self.cleaned_data.get("rule")
        return {} if rule in (None, "") else rule
