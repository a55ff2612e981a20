"""persona-sdk for Wagtail: editors target content without a developer.

Install (after the Django adapter, ``persona_django``)::

    INSTALLED_APPS = [..., "persona_django", "persona_wagtail", "wagtail", ...]

What it adds:

* **Segments in the admin** (:mod:`persona_wagtail.models`, the *Segments* menu): a name, a
  description and a rule built with the rule builder (nested all/any/none/not groups; rows
  for every field namespace, segment membership and every condition type a plugin
  registered; checked on the server as you type, with a live count of matching profiles).
  Rules are saved in the core's JSON form and compiled — never evaluated as code; a rule
  that does not compile cannot be saved. Segments from ``PERSONA["DEFINITIONS"]`` are listed
  read-only beside them; a name clash is a validation error. See
  :mod:`persona_wagtail.registry` for how every process picks up changes.
* **A personalized StreamField block** (:class:`persona_wagtail.blocks.PersonalizedBlock`):
  variants of any child blocks, each for a segment or a rule, in priority order, plus a
  default and an optional experiment — the same decision engine and slot semantics as
  ``{% personalize %}``.
* **Previews** (:class:`persona_wagtail.preview.PersonalizedPageMixin`): a preview mode per
  segment, per variant and "as a given profile", and a side-by-side view; previews never
  write profiles or exposures.
* **Reports**: exposures and conversions per variant, conversion rates with 95% intervals,
  uplift against the holdout, and a chart (:mod:`persona_wagtail.report`).
* **System checks** ``persona_wagtail.*`` (:mod:`persona_wagtail.checks`).

Settings: ``PERSONA_WAGTAIL`` (:mod:`persona_wagtail.conf`). All Wagtail admin wiring is in
:mod:`persona_wagtail.wagtail_hooks`. Works with Wagtail 7.x and 8.x.
"""
