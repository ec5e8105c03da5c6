"""Reference images (IP-Adapter) and pose/edge/depth control (ControlNet) on tiny SD1.5- and SDXL-shaped
pipelines, with tiny adapter and ControlNet weights registered in the weights store under the real names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from storyd import weights
from storyd.comic import ComicOptions, render_comic
from storyd.errors import InputError, WeightsError
from storyd.output import input_hashes
from storyd.plan.render_plan import plan_story
from storyd.preflight import preflight
from storyd.render.control import control_image, looks_like_edges
from storyd.render.generator import PanelGenerator
from storyd.render.tiny_models import write_tiny_controlnet, write_tiny_ip_adapter
from storyd.story.loader import load_story

FAMILY_OF = {"tiny": "sd15", "tiny-sdxl": "sdxl"}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Tiny IP-Adapter and ControlNet folders per family, built once for the module."""
    root = tmp_path_factory.mktemp("tiny-weights")
    folders = {}
    for family in ("sd15", "sdxl"):
        folders[f"ip-adapter-{family}"] = write_tiny_ip_adapter(family, root / f"ip-{family}")
        for seed, kind in enumerate(("openpose", "canny", "depth"), start=1):
            folders[f"controlnet-{kind}-{family}"] = write_tiny_controlnet(family, root / f"{kind}-{family}", seed)
    return folders


@pytest.fixture
def registered(tiny_weights):
    """Register the tiny weights in this test's storyd home, as `storyd weights add NAME PATH --allow-unpinned`."""
    lock = weights.load_lock()
    for name, folder in tiny_weights.items():
        weights.add(lock.get(name), folder, allow_unpinned=True)
    return tiny_weights


@pytest.fixture(scope="module")
def pipes(tiny_pipeline):
    return {name: tiny_pipeline(name) for name in ("tiny", "tiny-sdxl")}


def picture(path, colour, size=96, shape="ellipse"):
    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    getattr(draw, shape)((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=colour, outline=(0, 0, 0))
    image.save(path)
    return path


def pose(path, lean=0):
    """A stick figure on black, as an OpenPose skeleton image is."""
    image = Image.new("RGB", (96, 96))
    draw = ImageDraw.Draw(image)
    draw.line((48, 20, 48 + lean, 60), fill=(255, 0, 0), width=4)
    draw.line((48 + lean, 60, 30, 90), fill=(0, 255, 0), width=4)
    draw.line((48 + lean, 60, 66, 90), fill=(0, 0, 255), width=4)
    draw.line((20, 40, 76, 40), fill=(255, 255, 0), width=4)
    image.save(path)
    return path


def story_yaml(model, *, mia_ref=None, scale=None, controls=None, csa=True, sam_ref=None):
    """Mia and Sam, one reference panel each, then a read batch that mixes them."""
    mia = "  Mia:\n    description: a kid with red hair\n"
    if mia_ref:
        mia += f"    reference: {mia_ref}\n"
    if scale is not None:
        mia += f"    reference_scale: {scale}\n"
    sam = f"  Sam:\n    description: a kid with black hair\n    reference: {sam_ref}\n" if sam_ref else ""
    sam = sam or "  Sam: a kid with black hair\n"
    panels = ["Mia waving", "Sam running", "Mia sitting", "Sam sitting", "[NC] a quiet room"]
    lines = []
    for i, prompt in enumerate(panels):
        lines.append(f"  - prompt: \"{prompt}\"\n")
        if controls and i in controls:
            kind, image, strength = controls[i]
            lines.append(f"    control: {{kind: {kind}, image: {image}, strength: {strength}}}\n")
    return (
        f"model: {model}\nsteps: 3\nseed: 5\nconsistency: {{enabled: {str(csa).lower()}, id_panels: 1}}\n"
        f"characters:\n{mia}{sam}panels:\n" + "".join(lines)
    )


def draw(pipe, story_path, **plan_args):
    plan = plan_story(load_story(story_path), **plan_args)
    images = PanelGenerator(pipe, plan, device="cpu").draw()
    return {i: np.asarray(im) for i, im in images.items()}


def same(a, b) -> bool:
    return np.array_equal(a, b)


# --- story files -----------------------------------------------------------------------------


def test_references_and_control_load(write_story, tmp_path):
    picture(tmp_path / "a.png", (200, 0, 0))
    picture(tmp_path / "b.jpg", (0, 0, 200))
    pose(tmp_path / "pose.png")
    story = load_story(
        write_story(
            """
            characters:
              Mia:
                description: a kid
                reference: [a.png, b.jpg]
                reference_scale: 0.8
              Sam:
                description: a kid
                reference: a.png
            panels:
              - Mia waving
              - prompt: Sam running
                control: {kind: pose, image: pose.png}
              - prompt: Mia sitting
                control:
                  kind: canny
                  image: pose.png
                  strength: 1.5
            """
        )
    )
    mia, sam = story.characters["Mia"], story.characters["Sam"]
    assert mia.references == (tmp_path / "a.png", tmp_path / "b.jpg") and mia.reference_scale == 0.8
    assert sam.references == (tmp_path / "a.png",) and sam.reference_scale == 0.6
    assert story.panels[0].control is None
    assert (story.panels[1].control.kind, story.panels[1].control.strength) == ("pose", 1.0)
    assert (story.panels[2].control.kind, story.panels[2].control.strength) == ("canny", 1.5)


MIA = "characters:\n  Mia:\n    description: a kid\n"
CONTROL = "panels:\n  - prompt: a\n    control: "


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (MIA + "    reference: gone.png\npanels: [Mia]\n", (4, 16), "no such file"),
        (MIA + "    reference: notes.txt\npanels: [Mia]\n", (4, 16), "not a PNG"),
        (MIA + "    reference: fake.png\npanels: [Mia]\n", (4, 16), "not a readable"),
        (MIA + "    reference: small.png\npanels: [Mia]\n", (4, 16), "Mia's reference small.png is 32x32 px"),
        (MIA + "    reference:\n      - ok.png\n      - small.png\npanels: [Mia]\n", (6, 9), "too small"),
        (MIA + "    reference: ok.png\n    reference_scale: 3\npanels: [Mia]\n", (5, 22), "above the maximum 2"),
        (MIA + "    reference_scale: 1\npanels: [Mia]\n", (4, 22), "no reference"),
        (CONTROL + "{kind: poze, image: ok.png}\n", (3, 21), "did you mean 'pose'"),
        (CONTROL + "{kind: pose, image: gone.png}\n", (3, 34), "no such file"),
        (CONTROL + "{kind: depth, image: ok.png, strength: 2.5}\n", (3, 53), "above the maximum"),
        (CONTROL + "{kind: depth, image: ok.png, strenght: 1}\n", (3, 43), "did you mean 'strength'"),
        (CONTROL + "{image: ok.png}\n", (3, 14), "has no kind"),
        (CONTROL + "{kind: canny}\n", (3, 14), "has no image"),
        (CONTROL + "pose\n", (3, 14), "must be a mapping"),
    ],
)
def test_bad_references_and_controls_are_one_line_errors(write_story, tmp_path, body, where, message):
    picture(tmp_path / "ok.png", (200, 0, 0))
    picture(tmp_path / "small.png", (200, 0, 0), size=32)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(InputError) as info:
        load_story(write_story(body))
    error = info.value
    assert (error.line, error.col) == where, error.format()
    assert message in error.format() and "\n" not in error.format()
    assert error.format().startswith(str(tmp_path / "story.yaml"))


# --- hashes, warnings, weights --------------------------------------------------------------


def test_input_hashes_follow_reference_and_control_images(write_story, tmp_path):
    red, blue = picture(tmp_path / "red.png", (200, 0, 0)), picture(tmp_path / "blue.png", (0, 0, 200))
    pose(tmp_path / "pose.png")

    def hashes(**kw):
        return input_hashes(plan_story(load_story(write_story(story_yaml("tiny", **kw)))), "r")

    plain = hashes()
    with_ref = hashes(mia_ref="red.png")
    # Mia's panels change; so does nothing of Sam's (he never reads Mia's bank); the [NC] panel neither
    assert [i for i in plain if plain[i] != with_ref[i]] == [0, 2]
    red.write_bytes(blue.read_bytes())  # the same path, other pixels
    assert hashes(mia_ref="red.png")[0] != with_ref[0]
    assert hashes(mia_ref="red.png", scale=0.9)[2] != hashes(mia_ref="red.png")[2]
    assert hashes(mia_ref="red.png", scale=0) == plain  # scale 0: no reference

    control = hashes(controls={3: ("pose", "pose.png", 1.0)})
    assert [i for i in plain if plain[i] != control[i]] == [3]
    assert hashes(controls={3: ("pose", "pose.png", 0.5)})[3] != control[3]
    assert hashes(controls={3: ("depth", "pose.png", 1.0)})[3] != control[3]
    assert hashes(controls={3: ("pose", "pose.png", 0)}) == plain  # strength 0: no control
    # a control on a reference panel changes the panels that read its bank too
    on_reference = hashes(controls={1: ("pose", "pose.png", 1.0)})
    assert [i for i in plain if plain[i] != on_reference[i]] == [1, 3]
    pose(tmp_path / "pose.png", lean=10)
    assert hashes(controls={3: ("pose", "pose.png", 1.0)})[3] != control[3]


def test_models_without_adapter_or_controlnet_warn_and_ignore_them(write_story, tmp_path):
    picture(tmp_path / "red.png", (200, 0, 0))
    pose(tmp_path / "pose.png")
    path = write_story(story_yaml("tiny-sd21", mia_ref="red.png", controls={2: ("pose", "pose.png", 1)}))
    plan = plan_story(load_story(path))
    notes = preflight(plan)
    assert any("no IP-Adapter" in n and "Mia" in n for n in notes)
    assert any("no ControlNet" in n and "control of panel 3 " in n for n in notes)
    assert input_hashes(plan, "r") == input_hashes(plan_story(load_story(write_story(story_yaml("tiny-sd21")))), "r")


def test_missing_weights_fail_before_the_model_loads(write_story, tmp_path, monkeypatch):
    pose(tmp_path / "pose.png")
    story = load_story(write_story(story_yaml("tiny", controls={2: ("pose", "pose.png", 1)})))

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("storyd.comic.load_pipeline", no_load)
    with pytest.raises(WeightsError) as info:
        render_comic(story, ComicOptions(out_dir=tmp_path / "out", device="cpu"))
    assert "controlnet-openpose-sd15" in info.value.format()
    assert "storyd weights pull controlnet-openpose-sd15 --allow-unpinned" in info.value.format()


def test_canny_images_become_edge_maps_and_others_are_used_as_given(tmp_path):
    from storyd.story.model import PanelControl

    photo = picture(tmp_path / "photo.png", (200, 120, 40), size=128)
    edges = Image.new("RGB", (128, 96))
    ImageDraw.Draw(edges).rectangle((20, 20, 100, 70), outline=(255, 255, 255))
    edges.save(tmp_path / "edges.png")
    assert not looks_like_edges(np.asarray(Image.open(photo).convert("L")))
    assert looks_like_edges(np.asarray(edges.convert("L")))
    from_photo = np.asarray(control_image(PanelControl("canny", photo), 64, 64))
    assert from_photo.shape == (64, 64, 3) and set(np.unique(from_photo)) == {0, 255}  # Canny's output
    assert looks_like_edges(from_photo[..., 0])
    given = np.asarray(control_image(PanelControl("canny", tmp_path / "edges.png"), 64, 48))
    assert given.shape == (48, 64, 3)
    skeleton = np.asarray(control_image(PanelControl("pose", pose(tmp_path / "pose.png")), 96, 96))
    assert np.array_equal(skeleton, np.asarray(Image.open(tmp_path / "pose.png")))  # a pose map is not touched
    with pytest.raises(RuntimeError, match="no pose annotator"):  # a photo needs the annotator (test_annotators.py)
        control_image(PanelControl("pose", photo), 64, 64)


def test_several_reference_images_are_averaged(tiny_weights, tmp_path):
    from storyd.render.reference import IMAGE_ENCODER, encode_references
    from storyd.story.model import Character

    red, blue = picture(tmp_path / "red.png", (200, 0, 0)), picture(tmp_path / "blue.png", (0, 0, 200))
    folder = tiny_weights["ip-adapter-sd15"] / IMAGE_ENCODER
    characters = [Character("A", "a", (red,)), Character("B", "b", (blue,)), Character("AB", "ab", (red, blue))]
    embeds = encode_references(folder, characters, device="cpu", dtype=torch.float32)
    assert not torch.allclose(embeds["A"], embeds["B"])
    assert torch.allclose(embeds["AB"], (embeds["A"] + embeds["B"]) / 2, atol=1e-6)


# --- drawing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_a_reference_steers_its_characters_panels_and_leaves_the_rest(pipes, registered, write_story, tmp_path, model):
    picture(tmp_path / "red.png", (200, 0, 0))
    picture(tmp_path / "blue.png", (0, 0, 200), shape="rectangle")
    pipe = pipes[model]
    before = {n: type(p) for n, p in pipe.unet.attn_processors.items()}
    plain = draw(pipe, write_story(story_yaml(model)))
    red = draw(pipe, write_story(story_yaml(model, mia_ref="red.png")))
    blue = draw(pipe, write_story(story_yaml(model, mia_ref="blue.png")))
    for i in (0, 2):  # Mia's reference panel and her read panel
        assert not same(red[i], plain[i]) and not same(red[i], blue[i])
    for i in (1, 3, 4):  # Sam's (panel 3 shares a batch with Mia's steered panel 2) and the [NC] panel
        assert same(red[i], plain[i]), f"panel {i + 1} changed"
    assert same(draw(pipe, write_story(story_yaml(model, mia_ref="red.png", scale=0)))[2], plain[2])
    # two steered characters in one batch: each panel gets its own character's images only
    both = draw(pipe, write_story(story_yaml(model, mia_ref="red.png", sam_ref="blue.png")))
    sam_only = draw(pipe, write_story(story_yaml(model, sam_ref="blue.png")))
    assert same(both[2], red[2]) and same(both[3], sam_only[3]) and not same(both[3], plain[3])
    # the UNet is as it was: stock processors, no image projection
    assert {n: type(p) for n, p in pipe.unet.attn_processors.items()} == before
    assert pipe.unet.encoder_hid_proj is None and pipe.unet.config.encoder_hid_dim_type is None


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_control_steers_its_panel_only(pipes, registered, write_story, tmp_path, model):
    pose(tmp_path / "pose.png")
    pose(tmp_path / "lean.png", lean=20)
    pipe = pipes[model]
    plain = draw(pipe, write_story(story_yaml(model)))
    posed = draw(pipe, write_story(story_yaml(model, controls={3: ("pose", "pose.png", 1.0)})))
    assert not same(posed[3], plain[3])
    for i in (0, 1, 2, 4):  # panel 3 (index 2) shares panel 4's batch, with a ControlNet scale of 0
        assert same(posed[i], plain[i]), f"panel {i + 1} changed"
    leaning = draw(pipe, write_story(story_yaml(model, controls={3: ("pose", "lean.png", 1.0)})))
    assert not same(leaning[3], posed[3])
    weaker = draw(pipe, write_story(story_yaml(model, controls={3: ("pose", "pose.png", 0.3)})))
    assert not same(weaker[3], posed[3])
    off = draw(pipe, write_story(story_yaml(model, controls={3: ("pose", "pose.png", 0)})))
    assert same(off[3], plain[3])


def test_kinds_mix_in_one_batch_and_combine_with_a_reference(pipes, registered, write_story, tmp_path):
    pose(tmp_path / "pose.png")
    picture(tmp_path / "depth.png", (180, 180, 180))
    picture(tmp_path / "red.png", (200, 0, 0))
    pipe = pipes["tiny"]
    posed = {2: ("pose", "pose.png", 1.0)}
    both = {2: ("pose", "pose.png", 1.0), 3: ("depth", "depth.png", 1.0)}
    alone = {3: ("depth", "depth.png", 1.0)}
    mixed = draw(pipe, write_story(story_yaml("tiny", controls=both)))
    # in one batch, each panel gets its own kind: as drawn with only its own control
    assert same(mixed[2], draw(pipe, write_story(story_yaml("tiny", controls=posed)))[2])
    assert same(mixed[3], draw(pipe, write_story(story_yaml("tiny", controls=alone)))[3])
    steered = draw(pipe, write_story(story_yaml("tiny", mia_ref="red.png", controls=both)))
    assert not same(steered[2], mixed[2]) and same(steered[3], mixed[3])
    # a panel drawn alone (a resumed run) is the panel of the full run, up to the last float bits
    # (the UNet's batched convolutions and matmuls round differently from single ones)
    story = load_story(write_story(story_yaml("tiny", mia_ref="red.png", controls=both)))
    for index in (2, 3):
        alone_run = PanelGenerator(pipe, plan_story(story), device="cpu").draw({index})
        assert np.abs(np.asarray(alone_run[index]).astype(int) - steered[index]).max() <= 1


def test_comic_redraws_only_what_a_changed_control_decides(cli, registered, write_story, tmp_path):
    pose(tmp_path / "pose.png")
    path = write_story(story_yaml("tiny", controls={3: ("pose", "pose.png", 1.0)}))
    out = tmp_path / "out"
    first = render_comic(load_story(path), ComicOptions(out_dir=out, device="cpu"))
    assert first.rendered == [0, 1, 2, 3, 4]
    path.write_text(story_yaml("tiny", controls={3: ("pose", "pose.png", 0.7)}))
    again = render_comic(load_story(path), ComicOptions(out_dir=out, device="cpu"))
    assert again.rendered == [3]
    result = cli("validate", path, "--json")
    assert result.exit_code == 0, result.output
    panels = json.loads(result.stdout)["panels"]
    assert panels[3]["control"] == {"kind": "pose", "image": str(tmp_path / "pose.png"), "strength": 0.7}
    assert panels[0]["control"] is None and panels[0]["reference"] is None
