"""The Wagtail pages the comparison requests.

* :class:`StreamPage`: three StreamFields (hero, promo, banner), one place each like
  persona's three slots. The personalised page holds, per place, one
  ``PersonalisedStructBlock`` per variant (the block shows when the visitor is in its
  segment); the baseline page holds plain ``StructBlock`` s with the same fields and template.
* :class:`TagPage`: a template with one ``{% segment name="..." %}`` per variant.
* :class:`SimplePage`: the pages whose visits ``VisitCountRule`` counts (the visitor's
  history) and the site's home page.

No page uses ``PersonalisablePageMixin`` (whole-page variants): persona's slots are blocks
within a page, so the block-level features are the equivalent.
"""

from wagtail import blocks
from wagtail.fields import StreamField
from wagtail.models import Page
from wagtail_personalisation.blocks import PersonalisedStructBlock


def _fields() -> list[tuple[str, blocks.Block]]:
    return [
        ("slot", blocks.CharBlock()),
        ("variant", blocks.CharBlock()),
        ("heading", blocks.CharBlock()),
        ("text", blocks.TextBlock()),
        ("link", blocks.CharBlock()),
        ("cta", blocks.CharBlock()),
    ]


class PersonalisedVariantBlock(PersonalisedStructBlock):
    """Shown when the visitor is in ``segment`` (a field of PersonalisedStructBlock)."""

    def __init__(self, **kwargs):
        super().__init__(_fields(), **kwargs)

    class Meta:
        template = "benchpages/variant_block.html"


class PlainVariantBlock(blocks.StructBlock):
    def __init__(self, **kwargs):
        super().__init__(_fields(), **kwargs)

    class Meta:
        template = "benchpages/variant_block.html"


def _place() -> StreamField:
    return StreamField(
        [("personalised", PersonalisedVariantBlock()), ("plain", PlainVariantBlock())],
        blank=True,
    )


class StreamPage(Page):
    hero = _place()
    promo = _place()
    banner = _place()
    template = "benchpages/stream_page.html"


class TagPage(Page):
    template = "benchpages/tag_page.html"


class SimplePage(Page):
    template = "benchpages/simple_page.html"
