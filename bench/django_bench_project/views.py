from django.shortcuts import render


def personalized(request):
    """The page with three server-side ``{% personalize %}`` slots."""
    return render(request, "bench/personalized.html")


def plain(request):
    """The same page with plain blocks (the HTML this visitor gets, no tags)."""
    return render(request, "bench/plain.html")
