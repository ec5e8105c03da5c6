"""The public API exported from `storyd`: every name resolves to its home module's object, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import storyd


@pytest.mark.parametrize("name", [n for n in storyd.__all__ if n != "__version__"])
def test_every_exported_name_is_its_modules_object(name):
    module, _, attribute = storyd._EXPORTS[name].partition(":")
    assert getattr(storyd, name) is getattr(importlib.import_module(module), attribute or name)
    assert name in dir(storyd)


def test_the_api_covers_each_stage():
    assert {
        "load_story", "plan_story", "render_comic", "ComicOptions", "render_pages", "write_pages",
        "animate_frames", "evaluate", "Story", "RenderPlan", "ConsistencySettings", "InputError",
    } <= set(storyd.__all__)
    assert isinstance(storyd.__version__, str)


def test_animate_frames_does_not_hide_the_animate_package():
    import storyd.animate.run

    assert storyd.animate_frames is storyd.animate.run.animate
    assert storyd.animate is sys.modules["storyd.animate"]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'draw_comic'"):
        storyd.draw_comic  # noqa: B018
    assert not hasattr(storyd, "nothing_here")


def test_import_storyd_loads_no_heavy_module():
    """`import storyd` and a look at its names import nothing but storyd itself."""
    code = (
        "import sys, storyd; dir(storyd); storyd.__all__; "
        "print(' '.join(m for m in ('torch', 'diffusers', 'transformers', 'storyd.comic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
