"""persona-sdk for email: the same rules on the web and in the inbox.

Install with the ``email`` extra (``pip install "persona-sdk[email]"``) and add the app
after ``persona_django`` (and ``anymail`` if you use an ESP)::

    INSTALLED_APPS = [..., "persona_django", "anymail", "persona_email"]
    # then: manage.py migrate  (the campaign send log)

**Personalized sends.** An email template uses the same ``{% personalize %}`` slots as the
site's pages; each recipient gets the variants the decision engine picks for their profile
(same segments, same sticky experiment buckets as the web), and the message goes out through
Django's email API, so any backend works: SMTP, the console, or any django-anymail ESP::

    manage.py persona_send_campaign spring-2026 emails/spring.html \\
        --subject "Spring is here" --segment returning --from shop@example.com

or from code, :class:`persona_email.sending.Campaign`::

    report = Campaign("spring-2026", template_name="emails/spring.html",
                      subject="Spring is here").send(profile_ids)

Only recipients whose ``marketing`` consent allows are sent to; everyone else is reported
as skipped with the reason, as are people without an address; a malformed address, a slot
the template uses that does not exist, or a backend/ESP error fails that recipient only.
Exposures are recorded with channel ``email`` (experiment slots, as on the web). Every
``http(s)`` link gets a signed ``pzc`` parameter naming the slot and variant it sits in. A
send can be resumed: nobody in the campaign's send log is sent to again. Templates may use
``{{ recipient.email }}``, ``{{ recipient.traits.first_name }}``, ``{{ campaign }}``.

**Audience sync** (Klaviyo lists, Mailchimp tags), configured in ``PERSONA["PLUGINS"]``::

    PERSONA = {
        ...,
        "PLUGINS": {
            "klaviyo": {"api_key": env("KLAVIYO_KEY"),
                        "lists": {"returning-high-value": "Xy12Ab"}},
            "mailchimp": {"api_key": env("MAILCHIMP_KEY"),        # ends in -us19 etc.
                          "list_id": "a1b2c3d4e5",
                          "tags": {"returning-high-value": "VIP"}},
        },
    }

When a profile enters or leaves a mapped segment, an item is queued in the durable outbox
and ``manage.py persona_deliver`` sends it: Klaviyo subscribes people whose ``marketing``
consent was granted to the list *with consent* (a bulk subscription job) and adds anyone else
to the list without touching their consent; Mailchimp upserts the member by subscriber hash
(``subscribed`` with consent, ``transactional`` otherwise) and sets the tag. Leaving removes
the list membership / tag. A ``marketing`` denial (banner, unsubscribe, spam complaint)
unsubscribes the person at both; consent is re-read at delivery, so an older item never
re-subscribes anyone. Syncing needs the ``sharing`` consent (``"purposes"`` to change it).
Klaviyo's ``Retry-After`` is honoured; Mailchimp's limit of 10 simultaneous connections is
kept by a per-key semaphore. ``manage.py persona_sync_audiences`` reconciles everyone (after
a mapping change, or nightly for time-based segments and people who gave their address after
entering a segment). Erasure (``persona.erase`` / ``manage.py persona_erase``) asks Klaviyo
for a data-privacy deletion and permanently deletes the Mailchimp member.

**Events back.** Mount anymail's webhooks (``path("anymail/", include("anymail.urls"))``)
and point the ESP's event webhook at ``/anymail/<esp>/tracking/`` with the basic auth of
``ANYMAIL["WEBHOOK_SECRET"]``: opens, clicks, deliveries, bounces, unsubscribes and spam
complaints become profile events (``Email Opened``, ``Email Link Clicked``...);
unsubscribes and complaints record a ``marketing`` denial in the consent ledger; a click on a
tracked link counts as a conversion for the slot and variant it was in, in the same
``Conversion`` table the web's experiment reports read (channel ``email``).

``manage.py check`` reports missing keys (``persona_email.E0xx``) and mapping problems
(``persona_email.W0xx``) with hints. Without the ``klaviyo``/``mailchimp`` settings no sink
is registered and the plugin does nothing; the entry-point plugin imports neither Django nor
``requests`` nor anymail until a configured vendor needs them.
"""

from __future__ import annotations

__all__: list[str] = []
