"""Hooks that store what the Django adapter keeps beside profiles: exposures and
conversions (for experiment reports), and their part of erase and export.

Registered by :func:`persona_django.runtime.build_persona` on the site's own
:class:`~persona_sdk.Persona`, so they write to the site's database only for that instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persona_sdk import Identity, Profile, hookimpl

__all__ = ["DjangoStoragePlugin"]


class DjangoStoragePlugin:
    name = "persona_django.storage"

    @hookimpl
    def persona_erase(
        self, profile: Profile, identities: Sequence[Identity]
    ) -> Mapping[str, Any] | None:
        from .models import Conversion, Exposure

        ids = [profile.id, *sorted(profile.aliases)]
        exposures, _ = Exposure.objects.filter(profile_id__in=ids).delete()
        conversions, _ = Conversion.objects.filter(profile_id__in=ids).delete()
        return {
            "adapter": "persona_django",
            "exposures_deleted": exposures,
            "conversions_deleted": conversions,
        }

    @hookimpl
    def persona_export(self, profile: Profile) -> Mapping[str, Any] | None:
        from .models import Conversion, Exposure

        ids = [profile.id, *sorted(profile.aliases)]
        return {
            "exposures": list(
                Exposure.objects.filter(profile_id__in=ids)
                .order_by("at")
                .values("slot", "variant", "reason", "channel", "at")
            ),
            "conversions": list(
                Conversion.objects.filter(profile_id__in=ids)
                .order_by("at")
                .values("goal", "value", "slot", "variant", "channel", "at")
            ),
        }

    @hookimpl
    def persona_exposure(self, profile: Profile, decision: Any, channel: str) -> None:
        from .models import Exposure

        Exposure.objects.create(
            profile_id=profile.id,
            slot=decision.slot,
            variant=decision.variant,
            reason=decision.reason,
            channel=channel,
        )

    @hookimpl
    def persona_conversion(self, profile: Profile, goal: str, value: float, at: float) -> None:
        """A conversion counts for every experiment the profile was exposed to (web or email),
        and once without a slot, so reports can show overall conversion too."""
        from datetime import datetime, timezone

        from .models import Conversion

        when = datetime.fromtimestamp(at, tz=timezone.utc)
        rows = [Conversion(profile_id=profile.id, goal=goal, value=value, at=when)]
        for key, variant in sorted(profile.experiments.items()):
            slot = key.rsplit("@", 1)[0]
            rows.append(
                Conversion(
                    profile_id=profile.id,
                    goal=goal,
                    value=value,
                    at=when,
                    slot=slot,
                    variant=variant,
                )
            )
        Conversion.objects.bulk_create(rows)
