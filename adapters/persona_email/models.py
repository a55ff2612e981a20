"""What the email adapter keeps in the site's database: the campaign send log.

One row per (campaign, recipient profile), written *before* the message is handed to the
email backend (``sending``) and updated after (``sent`` / ``failed``), or written once for a
recipient who is skipped (no marketing consent, no address). A resumed send skips every
profile that already has a row, so nobody gets a campaign twice — a row left in ``sending``
by a crash is not retried automatically (the message may have gone out), it is reported.
Erasure deletes a person's rows; a merge moves them to the surviving profile.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

__all__ = ["CampaignSend"]


class CampaignSend(models.Model):
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    STATUS_CHOICES = (
        (SENDING, "sending"),
        (SENT, "sent"),
        (SKIPPED, "skipped"),
        (FAILED, "failed"),
    )

    campaign = models.CharField(max_length=200)
    profile_id = models.CharField(max_length=32, db_index=True)
    status = models.CharField(max_length=8, choices=STATUS_CHOICES)
    reason = models.TextField(blank=True, default="")
    #: slot -> variant key this recipient was sent
    variants = models.JSONField(default=dict, blank=True)
    #: the backend's message id when it gives one (anymail's ``anymail_status.message_id``)
    message_id = models.CharField(max_length=200, blank=True, default="")
    #: the send run that claimed the row
    run = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "campaign send"
        verbose_name_plural = "campaign send log"
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "profile_id"], name="persona_email_send_once"
            )
        ]
        indexes = [models.Index(fields=["campaign", "status"], name="persona_email_send_status")]

    def __str__(self) -> str:
        return f"{self.campaign} → {self.profile_id}: {self.status}"
