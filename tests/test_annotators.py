"""Pose and depth from a photo: the annotators on tiny ViTPose and DPT models built from configs, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from storyd import weights
from storyd.comic import ComicOptions, render_comic
from storyd.plan.render_plan import plan_story
from storyd.render.annotators import (
    COLOURS,
    DepthDetector,
    PersonDetector,
    PoseDetector,
    draw_openpose,
    looks_like_depth_map,
    looks_like_pose_map,
)
from storyd.render.conditioning import hash_inputs, required_weights
from storyd.render.control import control_image, needs_detection
from storyd.render.tiny_models import (
    write_tiny_controlnet,
    write_tiny_depth_estimator,
    write_tiny_person_detector,
    write_tiny_pose_estimator,
)
from storyd.story.loader import load_story
from storyd.story.model import PanelControl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    return {
        "annotator-pose": write_tiny_pose_estimator(root / "pose"),
        "annotator-person": write_tiny_person_detector(root / "person"),
        "annotator-depth": write_tiny_depth_estimator(root / "depth"),
        "controlnet-openpose-sd15": write_tiny_controlnet("sd15", root / "openpose", 1),
        "controlnet-depth-sd15": write_tiny_controlnet("sd15", root / "cn-depth", 3),
    }


def photo(path, size=(96, 80)):
    image = Image.new("RGB", size, (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 8, 56, 30), fill=(230, 190, 160))
    draw.rectangle((34, 30, 54, 70), fill=(200, 40, 40))
    image.save(path)
    return path


def test_the_skeleton_is_drawn_in_the_openpose_convention():
    points = np.zeros((17, 2))
    scores = np.ones(17)
    points[5], points[6] = (60, 40), (20, 40)  # COCO left and right shoulder: the neck falls at (40, 40)
    points[8] = (20, 80)  # right elbow
    scores[[0, 1, 2, 3, 4, 7, 9, 10, 11, 12, 13, 14, 15, 16]] = 0  # everything else unsure
    image = np.asarray(draw_openpose([(points, scores)], (128, 128)))
    assert image[40, 30].tolist() == [round(c * 0.6) for c in COLOURS[0]]  # limb 0: neck -> right shoulder
    assert image[40, 50].tolist() == [round(c * 0.6) for c in COLOURS[1]]  # limb 1: neck -> left shoulder
    assert image[60, 20].tolist() == [round(c * 0.6) for c in COLOURS[2]]  # limb 2: right shoulder -> elbow
    assert image[40, 40].tolist() == list(COLOURS[1])  # point 1, the neck
    assert image[100, 100].tolist() == [0, 0, 0] and looks_like_pose_map(image)


class Boxes:
    """A person detector that finds the given boxes (COCO x, y, width, height)."""

    def __init__(self, *boxes):
        self.found = [list(b) for b in boxes]

    def boxes(self, image):
        return self.found


def test_each_person_the_detector_finds_gets_a_skeleton_in_its_box(tiny, tmp_path):
    source = Image.open(photo(tmp_path / "kids.png", size=(240, 80)))
    pose = PoseDetector(tiny["annotator-pose"], Boxes((0, 0, 60, 80), (180, 0, 60, 80)))
    people = pose.keypoints(source)
    assert len(people) == 2
    for (points, _), (left, right) in zip(people, [(0, 60), (180, 240)], strict=True):
        assert left <= points[:, 0].mean() <= right  # read in its own box (ViTPose pads a box by a quarter)
    alone = PoseDetector(tiny["annotator-pose"], Boxes())  # nobody found: the whole photo is one person
    assert len(alone.keypoints(source)) == 1
    two = np.asarray(pose(source))
    assert looks_like_pose_map(two) and two[:, 90:150].max() == 0 < two[:, :90].max()  # nothing between them
    assert PersonDetector(tiny["annotator-person"]).person == 0  # the COCO class named "person"


def test_a_photo_gives_a_pose_map_and_a_depth_map(tiny, tmp_path):
    source = Image.open(photo(tmp_path / "kid.png"))
    assert not looks_like_pose_map(np.asarray(source)) and not looks_like_depth_map(np.asarray(source))
    skeleton = PoseDetector(tiny["annotator-pose"], tiny["annotator-person"])(source)
    assert skeleton.size == source.size and looks_like_pose_map(np.asarray(skeleton))
    assert np.asarray(skeleton).max() > 0  # the random estimator is sure of some points
    depth = np.asarray(DepthDetector(tiny["annotator-depth"])(source))
    assert depth.shape == (80, 96, 3) and looks_like_depth_map(depth)
    assert depth.min() == 0 and depth.max() == 255  # scaled over the photo


def test_only_photos_are_detected_and_need_the_annotator_weights(tiny, tmp_path, write_story):
    kid = photo(tmp_path / "kid.png")
    skeleton = Image.new("RGB", (96, 80))
    ImageDraw.Draw(skeleton).line((48, 10, 48, 70), fill=(255, 0, 0), width=4)
    skeleton.save(tmp_path / "skeleton.png")
    Image.new("RGB", (96, 80), (128, 128, 128)).save(tmp_path / "grey.png")
    assert needs_detection(PanelControl("pose", kid)) and needs_detection(PanelControl("depth", kid))
    assert not needs_detection(PanelControl("pose", tmp_path / "skeleton.png"))
    assert not needs_detection(PanelControl("depth", tmp_path / "grey.png"))
    assert not needs_detection(PanelControl("canny", kid))  # edges come from OpenCV, no weights
    detectors = {"pose": PoseDetector(tiny["annotator-pose"])}
    fitted = np.asarray(control_image(PanelControl("pose", kid), 64, 64, detectors))
    assert fitted.shape == (64, 64, 3) and looks_like_pose_map(fitted)

    def story(image):
        text = "model: tiny\nsteps: 2\npanels:\n  - a kid\n  - prompt: a kid jumping\n"
        text += f"    control: {{kind: pose, image: {image}}}\n"
        return plan_story(load_story(write_story(text)))

    from_photo, from_map = story(kid), story(tmp_path / "skeleton.png")
    assert required_weights(from_photo) == ["controlnet-openpose-sd15", "annotator-pose", "annotator-person"]
    assert required_weights(from_map) == ["controlnet-openpose-sd15"]
    annotators = hash_inputs(from_photo, from_photo.jobs[1])["control"]["annotator"]
    assert [a["name"] for a in annotators] == ["annotator-pose", "annotator-person"]
    assert "annotator" not in hash_inputs(from_map, from_map.jobs[1])["control"]


def test_the_comic_saves_the_detected_maps_beside_the_panels(tiny, tmp_path, write_story, monkeypatch):
    # the lock knows the real DPT weights' sha256, which the tiny ones cannot match: test against a copy without it
    data = json.loads(weights.load_lock().path.read_text())
    for file in data["models"]["annotator-depth"]["files"]:
        file["sha256"] = None
    (tmp_path / "weights.lock").write_text(json.dumps(data))
    monkeypatch.setenv("STORYD_WEIGHTS_LOCK", str(tmp_path / "weights.lock"))
    lock = weights.load_lock()
    for name, folder in tiny.items():
        weights.add(lock.get(name), folder, allow_unpinned=True)
    photo(tmp_path / "kid.png")
    path = write_story(
        "model: tiny\nsteps: 2\npanels:\n  - a kid waving\n"
        "  - prompt: a kid jumping\n    control: {kind: pose, image: kid.png}\n"
        "  - prompt: a kid in a room\n    control: {kind: depth, image: kid.png}\n"
    )
    out = tmp_path / "out"
    render_comic(load_story(path), ComicOptions(out_dir=out, device="cpu"))
    panels = json.loads((out / "manifest.json").read_text())["panels"]
    assert "control_map" not in panels[0]
    assert [p["control_map"] for p in panels[1:]] == ["panels/control/002-pose.png", "panels/control/003-depth.png"]
    assert looks_like_pose_map(np.asarray(Image.open(out / panels[1]["control_map"])))
    assert looks_like_depth_map(np.asarray(Image.open(out / panels[2]["control_map"])))
    assert sorted(p.name for p in (out / "panels").glob("*.png")) == ["001.png", "002.png", "003.png"]
