"""Cart, checkout and login: the events a shop sends, recorded server-side."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.models import ProductPage
from persona_django import track


@require_POST
def add_to_cart(request: HttpRequest, product_id: int) -> HttpResponse:
    product = get_object_or_404(ProductPage.objects.live(), pk=product_id)
    cart = request.session.get("cart", {})
    cart[str(product.pk)] = cart.get(str(product.pk), 0) + 1
    request.session["cart"] = cart
    track(request, "Product Added", {"product_id": str(product.pk), "category": product.category,
                                     "price": float(product.price)})
    return redirect("cart")


def cart_view(request: HttpRequest) -> HttpResponse:
    cart = request.session.get("cart", {})
    products = {str(p.pk): p for p in ProductPage.objects.live().filter(pk__in=[int(k) for k in cart])}
    lines = [(products[k], n, products[k].price * n) for k, n in cart.items() if k in products]
    total = sum((line[2] for line in lines), Decimal(0))
    return render(request, "shop/cart.html", {"lines": lines, "total": total})


@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    cart = request.session.get("cart", {})
    products = {str(p.pk): p for p in ProductPage.objects.live().filter(pk__in=[int(k) for k in cart])}
    items = [(products[k], n) for k, n in cart.items() if k in products]
    if not items:
        return redirect("cart")
    total = float(sum(p.price * n for p, n in items))
    track(request, "Order Completed", {
        "revenue": total,
        "products": [{"product_id": str(p.pk), "category": p.category, "quantity": n} for p, n in items],
    })
    request.session["cart"] = {}
    return render(request, "shop/thanks.html", {"total": total})


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
