"""Test settings for the email adapter (INSTALLED_APPS additions and its own settings).

Email goes to Django's locmem outbox unless a test points it elsewhere (a real SMTP server
on loopback, or django-anymail's SendGrid backend pointed at the fake SendGrid).
"""

EXTRA_APPS_EMAIL: list[str] = ["anymail", "persona_email"]

DEFAULT_FROM_EMAIL = "shop@example.com"

ANYMAIL = {
    # Basic auth the ESP's tracking webhook must send (anymail answers 400 otherwise)
    "WEBHOOK_SECRET": "persona-test:webhook-secret",
    "SENDGRID_API_KEY": "SG.persona-test-key",
}
