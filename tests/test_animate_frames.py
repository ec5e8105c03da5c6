"""Keyframe loading and validation: order, manifests, and one clear InputError per bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from storyd.animate.frames import fit_image, load_keyframes, natural_key, output_size, parse_size, transition_prompt
from storyd.errors import InputError


def save(path, size=(32, 24), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_natural_order_and_non_images_ignored(tmp_path):
    for name in ("10.png", "2.jpg", "1.jpeg"):
        save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    frames = load_keyframes(tmp_path)
    assert [f.path.name for f in frames] == ["1.jpeg", "2.jpg", "10.png"]
    assert all(f.image.mode == "RGB" and f.prompt is None for f in frames)
    assert sorted(["a10", "a9", "A1"], key=natural_key) == ["A1", "a9", "a10"]


def test_comic_manifest_gives_order_and_prompts(tmp_path):
    save(tmp_path / "panels" / "001.png", color=(1, 1, 1))
    save(tmp_path / "panels" / "002.png", color=(2, 2, 2))
    save(tmp_path / "stray.png")  # not in the manifest: ignored
    panels = [
        {"index": 1, "file": "panels/001.png", "prompt": "second"},
        {"index": 0, "file": "panels/002.png", "prompt": "first"},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"panels": panels}))
    frames = load_keyframes(tmp_path)
    assert [(f.path.name, f.prompt) for f in frames] == [("002.png", "first"), ("001.png", "second")]


def test_a_transition_is_prompted_with_the_characters_both_panels_show(tmp_path):
    described = {"Mia": "a kid with red hair", "Leo": "a kid with a hat", "Ann": "a kid with glasses"}
    shown = [["Mia", "Leo"], ["Leo", "Mia", "Ann"], ["Ann"], []]
    panels = [{"index": i, "file": f"{i}.png", "prompt": f"panel {i}", "characters": names}
              for i, names in enumerate(shown)]
    for i in range(len(shown)):
        save(tmp_path / f"{i}.png")
    (tmp_path / "manifest.json").write_text(json.dumps({"characters": described, "panels": panels}))
    frames = load_keyframes(tmp_path)
    assert frames[1].characters == ("a kid with a hat", "a kid with red hair", "a kid with glasses")
    prompts = [transition_prompt(a, b) for a, b in zip(frames, frames[1:])]
    # shared characters in the end panel's order; none shared, the end panel's own prompt
    assert prompts == ["a kid with a hat and a kid with red hair", "a kid with glasses", "panel 3"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no PNG or JPEG keyframes found"),
        (lambda d: save(d / "a.png"), "only one keyframe found"),
        (lambda d: (save(d / "a.png"), save(d / "b.png", size=(16, 16))), "is 16x16 but a.png is 32x24"),
        (lambda d: (save(d / "a.png"), (d / "b.png").write_bytes(b"not an image")), "not a readable image"),
        (lambda d: (d / "manifest.json").write_text("{}"), "not a storyd comic manifest"),
        (
            lambda d: (d / "manifest.json").write_text(json.dumps({"panels": [{"index": 0, "file": "x.png"}]})),
            "is listed in manifest.json but missing",
        ),
    ],
    ids=["empty", "one", "mixed-sizes", "not-image", "bad-manifest", "missing-panel"],
)
def test_bad_folders_raise_one_clear_input_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(InputError) as info:
        load_keyframes(tmp_path)
    text = info.value.format()
    assert message in text
    assert "\n" not in text and info.value.hint
    assert str(tmp_path) in text  # names the path


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_keyframes(tmp_path / "nope")
    with pytest.raises(InputError, match="not a folder"):
        load_keyframes(save(tmp_path / "a.png"))


def test_sizes():
    assert output_size((517, 300), None) == (512, 296)
    assert output_size((100, 100), (64, 48)) == (64, 48)
    with pytest.raises(InputError, match="not a positive multiple of 8"):
        output_size((100, 100), (60, 48))
    assert output_size((800, 600), 256) == (256, 192)
    assert output_size((600, 800), 256) == (192, 256)
    assert parse_size("320x240") == (320, 240)
    assert parse_size(" 256 ") == 256
    with pytest.raises(InputError, match="can't read size"):
        parse_size("big")


def test_fit_image_covers_and_crops_centre():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (15, 0, 25, 20))  # white centre stripe
    fitted = fit_image(image, (16, 16))
    assert fitted.size == (16, 16)
    assert fitted.getpixel((8, 8)) == (255, 255, 255) and fitted.getpixel((0, 8))[0] < 50
