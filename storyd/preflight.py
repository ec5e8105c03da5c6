"""What is checked once a plan is made and before any model loads: the pages have room for the
panels' real shape, and what the user should know (a noise model, conditioning, lettering).

It sits above the plan, the render stage and the layout, so that none of them imports another
stage's checks; `storyd comic` and `storyd validate` both run it, and neither needs torch for it.
"""

from __future__ import annotations

from storyd.errors import InputError
from storyd.layout.render import check_layout, lettering_warnings
from storyd.plan.render_plan import RenderPlan
from storyd.render.conditioning import conditioning_warnings


def preflight(plan: RenderPlan) -> list[str]:
    """Raise InputError (naming the story) for a layout with no room; return the plan's warnings."""
    story = plan.story
    try:
        check_layout(story, plan.width / plan.height)
    except InputError as exc:
        raise InputError(exc.message, exc.hint, path=story.path) from None
    notes = []
    if not plan.preset.art:
        notes.append(f"model '{plan.preset.name}' has random weights: its images are noise, not art")
    if not plan.footprint.fits:
        notes.append(f"the run may not fit in memory: {plan.footprint.advice}")
    return notes + conditioning_warnings(plan) + lettering_warnings(story)
