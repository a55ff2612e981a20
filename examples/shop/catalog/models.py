"""The shop's pages: home (with a personalized hero block), categories, products, and a page
that explains the maturity path."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.http import HttpRequest
from wagtail import blocks
from wagtail.admin.panels import FieldPanel
from wagtail.fields import RichTextField, StreamField
from wagtail.models import Page

from persona_django import track
from persona_wagtail.blocks import PersonalizedBlock
from persona_wagtail.preview import PersonalizedPageMixin

HERO_CHILDREN = [
    ("heading", blocks.CharBlock()),
    ("text", blocks.TextBlock()),
    ("link", blocks.StructBlock([("label", blocks.CharBlock()), ("url", blocks.CharBlock())])),
]


class HomePage(PersonalizedPageMixin, Page):
    """The front page: a personalized hero (editors choose the audiences in the admin)."""

    hero = StreamField(
        [("personalized", PersonalizedBlock(child_blocks=HERO_CHILDREN))],
        blank=True,
        use_json_field=True,
    )
    intro = RichTextField(blank=True)

    content_panels = [*Page.content_panels, FieldPanel("hero"), FieldPanel("intro")]
    subpage_types = ["catalog.CategoryPage", "catalog.MaturityPage", "catalog.DealsPage"]

    def get_context(self, request: HttpRequest, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context(request, *args, **kwargs)
        context["featured"] = ProductPage.objects.live().order_by("-price")[:4]
        return context


class CategoryPage(Page):
    slug_name = models.CharField(max_length=40, help_text="category key used in events")
    subpage_types = ["catalog.ProductPage"]
    content_panels = [*Page.content_panels, FieldPanel("slug_name")]

    def get_context(self, request: HttpRequest, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context(request, *args, **kwargs)
        context["products"] = ProductPage.objects.child_of(self).live().order_by("title")
        return context


class ProductPage(Page):
    price = models.DecimalField(max_digits=8, decimal_places=2)
    description = models.TextField(blank=True)
    parent_page_types = ["catalog.CategoryPage"]
    content_panels = [*Page.content_panels, FieldPanel("price"), FieldPanel("description")]

    @property
    def category(self) -> str:
        parent = self.get_parent().specific
        return getattr(parent, "slug_name", "")

    def serve(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.method == "GET" and not getattr(request, "is_preview", False):
            track(request, "Product Viewed", {"product_id": str(self.pk), "category": self.category,
                                              "price": float(self.price)})
        return super().serve(request, *args, **kwargs)


class MaturityPage(Page):
    """Explains One>>All → One>>Many → One>>Few → One>>One with the rules the shop uses."""

    body = RichTextField(blank=True)
    content_panels = [*Page.content_panels, FieldPanel("body")]

    def get_context(self, request: HttpRequest, *args: Any, **kwargs: Any) -> dict[str, Any]:
        import json

        from persona_django.runtime import get_persona

        context = super().get_context(request, *args, **kwargs)
        persona = get_persona()
        levels: dict[str, list[dict[str, str]]] = {"One>>Many": [], "One>>Few": [], "One>>One": []}
        for segment in persona.segments:
            level = next((k for k in levels if segment.description.startswith(k)), None)
            if level:
                levels[level].append({
                    "name": segment.name,
                    "description": segment.description.split(": ", 1)[-1],
                    "rule": json.dumps(segment.rule.spec),
                })
        context["levels"] = levels
        rp = getattr(request, "persona", None)
        if rp is not None and rp.may("personalization"):
            context["my_segments"] = sorted(persona.segments.evaluate_all(rp.subject))
        return context


class DealsPage(Page):
    """Edge mode: the HTML is the same for every visitor (cached); the browser asks the
    decide endpoint which deal to show."""

    content_panels = Page.content_panels
    cache_seconds = 300

    def serve(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        from django.core.cache import cache

        key = f"shop:deals-html:{self.pk}:{self.latest_revision_id}"
        html = cache.get(key)
        if html is None:
            response = super().serve(request, *args, **kwargs)
            response.render()
            cache.set(key, response.content, self.cache_seconds)
            response["X-Shop-Cache"] = "miss"
            response["Cache-Control"] = f"public, max-age={self.cache_seconds}"
            return response
        from django.http import HttpResponse

        response = HttpResponse(html)
        response["X-Shop-Cache"] = "hit"
        response["Cache-Control"] = f"public, max-age={self.cache_seconds}"
        return response
