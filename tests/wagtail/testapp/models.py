"""Page models for the Wagtail adapter's tests (and bench/bench_wagtail.py)."""

from wagtail import blocks
from wagtail.admin.panels import FieldPanel
from wagtail.fields import StreamField
from wagtail.models import Page
from wagtail.search import index

from persona_wagtail.blocks import PersonalizedBlock
from persona_wagtail.preview import PersonalizedPageMixin


class HeroBlock(blocks.StructBlock):
    heading = blocks.CharBlock()
    text = blocks.CharBlock(required=False)

    class Meta:
        template = "testapp/hero_block.html"


class BoomBlock(blocks.CharBlock):
    """Content that raises while rendering (a broken third-party block)."""

    def render(self, value, context=None):
        raise RuntimeError("boom: this block always fails to render")


def content_blocks():
    return [
        (
            "heading",
            blocks.CharBlock(form_classname="title", template="testapp/heading_block.html"),
        ),
        ("paragraph", blocks.RichTextBlock()),
        ("hero", HeroBlock()),
        ("boom", BoomBlock()),
    ]


class PersonalizedPage(PersonalizedPageMixin, Page):
    body = StreamField(
        [
            *content_blocks(),
            ("personalized", PersonalizedBlock(child_blocks=content_blocks())),
        ],
        blank=True,
    )

    content_panels = [*Page.content_panels, FieldPanel("body")]
    search_fields = [*Page.search_fields, index.SearchField("body")]
    template = "testapp/page.html"


class PlainPage(Page):
    """The same page without personalization (the benchmark's baseline)."""

    body = StreamField(content_blocks(), blank=True)

    content_panels = [*Page.content_panels, FieldPanel("body")]
    template = "testapp/page.html"
