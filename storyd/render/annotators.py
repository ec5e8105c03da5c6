"""Pose and depth detectors: a reference photo becomes the map a pose or depth ControlNet reads.

Both run through `transformers`, with weights pinned in weights.lock like every other model:

- pose: an object detector (`annotator-person`, RT-DETR, PekingU/rtdetr_r50vd_coco_o365,
  Apache-2.0) finds the people in the photo, then ViTPose (`annotator-pose`,
  usyd-community/vitpose-base-simple, Apache-2.0) finds each one's 17 COCO body keypoints
  (top-down; where no one is found, the whole photo is taken as one person's box). They are drawn
  in the OpenPose convention the pose ControlNets were trained on: 18 points (the neck is the
  shoulders' midpoint), each limb in its own colour on black. Hands and face are not detected.
- depth: DPT-Hybrid MiDaS (`annotator-depth`, Intel/dpt-hybrid-midas, Apache-2.0) predicts relative
  inverse depth, scaled to 0..255 over the photo, so near is bright as the depth ControlNets expect.

controlnet_aux, the usual source of these annotators, imports torchvision and timm for every
detector it ships, which do not install beside storyd's pinned CPU torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

# OpenPose's 18 points, each as the COCO keypoint it is (None: the neck, between the shoulders).
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# The OpenPose palette: colour k for limb k and for point k (a hue wheel in 18 steps).
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
MIN_SCORE = 0.3  # keypoints the estimator is less sure of are left out
PERSON_SCORE = 0.5  # detections the detector is less sure of are not people


class PersonDetector:
    """The boxes of the people in a photo, by an object detector trained on COCO's classes."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        from storyd.errors import WeightsError

        self.processor = AutoImageProcessor.from_pretrained(str(folder))
        self.model = AutoModelForObjectDetection.from_pretrained(str(folder)).to(device).eval()
        self.device = device
        labels = {name.lower(): int(index) for index, name in self.model.config.id2label.items()}
        if "person" not in labels:
            raise WeightsError(f"the detector in {folder} has no 'person' class",
                               "register the detector weights.lock names (`storyd weights pull annotator-person`)")
        self.person = labels["person"]

    def boxes(self, image: Image.Image) -> list[list[float]]:
        """COCO boxes (x, y, width, height), in the photo's pixels, of the people found."""
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_object_detection(
            outputs, threshold=PERSON_SCORE, target_sizes=[(image.height, image.width)]
        )[0]
        return [
            [x0, y0, x1 - x0, y1 - y0]
            for (x0, y0, x1, y1), label in zip(found["boxes"].tolist(), found["labels"].tolist(), strict=True)
            if label == self.person and x1 > x0 and y1 > y0
        ]


class PoseDetector:
    def __init__(self, folder: Path, people: Path | PersonDetector | None = None, device: str = "cpu") -> None:
        from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor

        self.processor = VitPoseImageProcessor.from_pretrained(str(folder))
        self.model = VitPoseForPoseEstimation.from_pretrained(str(folder)).to(device).eval()
        self.device = device
        self.people = PersonDetector(people, device) if isinstance(people, Path) else people

    def keypoints(self, image: Image.Image) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per person, the 17 COCO keypoints (x, y) in the photo's pixels and their scores."""
        boxes = [(self.people.boxes(image) if self.people else []) or [[0, 0, image.width, image.height]]]
        inputs = self.processor(image.convert("RGB"), boxes=boxes, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        people = self.processor.post_process_pose_estimation(outputs, boxes=boxes)[0]
        return [(p["keypoints"].float().cpu().numpy(), p["scores"].float().cpu().numpy()) for p in people]

    def __call__(self, image: Image.Image) -> Image.Image:
        return draw_openpose(self.keypoints(image), image.size)


def draw_openpose(people: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int]) -> Image.Image:
    """Each person's COCO keypoints (points, scores) drawn as an OpenPose skeleton on black (limbs at
    60% of their colour, then points)."""
    canvas = Image.new("RGB", size)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(size) / 128))
    for points, scores in people:
        found = _openpose_points(points, scores)
        for k, (a, b) in enumerate(LIMBS):
            if found[a] is not None and found[b] is not None:
                colour = tuple(round(c * 0.6) for c in COLOURS[k])
                draw.line([found[a], found[b]], fill=colour, width=width * 2)
        for k, point in enumerate(found):
            if point is not None:
                x, y = point
                draw.ellipse((x - width, y - width, x + width, y + width), fill=COLOURS[k])
    return canvas


def _openpose_points(points: np.ndarray, scores: np.ndarray) -> list[tuple[float, float] | None]:
    found: list[tuple[float, float] | None] = []
    for coco in OPENPOSE_FROM_COCO:
        if coco is None:
            shoulders = [points[i] for i in (5, 6) if scores[i] >= MIN_SCORE]
            found.append(tuple(np.mean(shoulders, axis=0)) if len(shoulders) == 2 else None)
        else:
            found.append(tuple(points[coco]) if scores[coco] >= MIN_SCORE else None)
    return found


class DepthDetector:
    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.processor = AutoImageProcessor.from_pretrained(str(folder))
        self.model = AutoModelForDepthEstimation.from_pretrained(str(folder)).to(device).eval()
        self.device = device

    def __call__(self, image: Image.Image) -> Image.Image:
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            depth = self.model(**inputs).predicted_depth.float()  # (1, h, w): relative inverse depth
        depth = torch.nn.functional.interpolate(depth[:, None], size=(image.height, image.width), mode="bicubic")[0, 0]
        low, high = depth.min(), depth.max()
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        grey = (scaled.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(grey).convert("RGB")


DETECTORS = {"pose": PoseDetector, "depth": DepthDetector}


def looks_like_pose_map(rgb: np.ndarray) -> bool:
    """Whether an (H, W, 3) image already is a skeleton map: mostly black."""
    return bool(np.mean(rgb.max(axis=-1) < 16) >= 0.6)


def looks_like_depth_map(rgb: np.ndarray) -> bool:
    """Whether an (H, W, 3) image already is a depth map: grey, every pixel's channels (nearly) equal."""
    spread = rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)
    return bool(np.percentile(spread, 99) <= 6)


def is_map(kind: str, rgb: np.ndarray) -> bool:
    """Whether an image given for a `pose` or `depth` control is already the map (else it is a photo to detect)."""
    return looks_like_pose_map(rgb) if kind == "pose" else looks_like_depth_map(rgb)
