"""URLs the cdp adapter's tests need (included at the root by urls.py)."""

urlpatterns: list = []
