"""Make the example shop alive on first run: pages, products, users and some history.

Idempotent: running it again changes nothing that already exists.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

CATALOG = {
    ("Shoes", "shoes"): [("Trail runners", "89.00"), ("City sneakers", "69.00"), ("Winter boots", "129.00")],
    ("Bags", "bags"): [("Daypack", "59.00"), ("Leather tote", "149.00"), ("Weekender", "119.00")],
    ("Outdoor", "outdoor"): [("Two-person tent", "249.00"), ("Rain jacket", "99.00"), ("Sleeping bag", "139.00")],
}

HERO_VARIANTS = [
    ("vip", "vip", "Welcome back — your VIP preview is open", "New arrivals, 48 hours early, for our best customers."),
    ("welcome-back", "returning", "Good to see you again", "Pick up where you left off."),
    ("first-visit", "first-time", "Welcome to Persona Shop", "Shoes, bags and outdoor gear, chosen with care."),
]
HERO_DEFAULT = ("Persona Shop", "Shoes, bags and outdoor gear.")


class Command(BaseCommand):
    help = "Create the example shop's pages, products, users and visitor history (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            home = self._pages()
        self._people()
        self.stdout.write(self.style.SUCCESS(
            f"shop ready: home page {home.url}; log in as ada/persona (VIP) or bob/persona; "
            "the Wagtail admin is at /cms/ (admin/persona)"
        ))

    def _pages(self) -> Any:
        from wagtail.models import Page, Site

        from catalog.models import CategoryPage, DealsPage, HomePage, MaturityPage, ProductPage
        from catalog.hero import hero_stream

        home = HomePage.objects.first()
        if home is None:
            root = Page.get_first_root_node()
            home = HomePage(title="Persona Shop", slug="shop-home",
                            intro="<p>A small shop that shows persona-sdk's maturity path.</p>")
            home.hero = hero_stream(HERO_VARIANTS, HERO_DEFAULT)
            root.add_child(instance=home)
            home.save_revision().publish()
            site = Site.objects.filter(is_default_site=True).first()
            old_root = site.root_page if site else None
            if site is None:
                Site.objects.create(hostname="localhost", root_page=home, is_default_site=True,
                                    site_name="Persona Shop")
            else:
                site.root_page = home
                site.save()
            if old_root is not None and old_root.pk != home.pk and old_root.depth == 2:
                old_root.delete()
            self.stdout.write("created the home page")
        for (title, key), products in CATALOG.items():
            category = CategoryPage.objects.filter(slug_name=key).first()
            if category is None:
                category = CategoryPage(title=title, slug=key, slug_name=key)
                home.add_child(instance=category)
                category.save_revision().publish()
            for name, price in products:
                slug = name.lower().replace(" ", "-")
                if not ProductPage.objects.filter(slug=slug).exists():
                    product = ProductPage(title=name, slug=slug, price=Decimal(price),
                                          description=f"{name}: a {key} favourite.")
                    category.add_child(instance=product)
                    product.save_revision().publish()
        if not MaturityPage.objects.exists():
            page = MaturityPage(title="How it works", slug="how-it-works", body=(
                "<p>Personalization grows in four steps. Each step below lists the rules this "
                "shop uses; they are plain JSON, compiled once, never executed as code.</p>"))
            home.add_child(instance=page)
            page.save_revision().publish()
        if not DealsPage.objects.exists():
            page = DealsPage(title="Deals", slug="deals")
            home.add_child(instance=page)
            page.save_revision().publish()
        return home

    def _people(self) -> None:
        from shop.history import seed_history

        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "persona")
        for username, email in (("ada", "ada@example.com"), ("bob", "bob@example.com")):
            if not User.objects.filter(username=username).exists():
                User.objects.create_user(username, email, "persona")
        seed_history(User.objects.get(username="ada"))
