from django.contrib.auth import get_user_model, login
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from persona_django import track


def home(request):
    return render(request, "home.html")


def plain(request):
    return render(request, "plain.html")


def edge(request):
    return render(request, "edge.html")


@require_POST
def buy(request):
    amount = float(request.POST.get("amount", "0"))
    track(request, "Order Completed", {"revenue": amount})
    return HttpResponse("thanks")


def login_as(request, username):
    user, _ = get_user_model().objects.get_or_create(username=username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse("logged in")
