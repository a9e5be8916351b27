"""Pure numpy/PIL renderer of synthetic pedestrians for re-id experiments.

This module draws small RGB crops (default 128 x 64, like Market-1501 boxes) of
stylised walking people.  It deliberately depends only on numpy and PIL so that
data can be produced quickly, offline and without torch.

Body model
----------
A person is a 2-D articulated stick figure with volume, parameterised in
"person units" where 0 is the top of the head and 1 the sole of the feet (the
crop is later scaled so that this span fills most of the crop height).  The
skeleton carries exactly the 17 COCO keypoints (nose, eyes, ears, shoulders,
elbows, wrists, hips, knees, ankles) plus a few helpers (neck, waist).

* Proportions depend on the identity: gender (male: wider shoulders, narrower
  hips; female: the opposite and slimmer limbs), age group (children have a
  relatively larger head and shorter legs), a per-identity height factor
  (taller people fill the crop slightly more) and a build factor (width).
* Limbs are thick line segments with round joints; the torso, crotch, dress,
  coat and long hair are polygons; head, hands and shoes are ellipses.
* Clothing follows the Market-1501 / DukeMTMC attribute vocabulary
  (:class:`Appearance`): sleeve length (long sleeves, or short sleeves showing
  skin on the forearms), lower-body length (long trousers, or shorts/skirt
  showing skin on the shins), dress (trapezoid skirt) vs. pants, a long coat
  (Duke ``top``), boots, shoe colour, hat, backpack, shoulder bag with a
  diagonal strap, handbag hanging from one wrist, hair length and colour (grey
  for old people).  Fine per-identity traits that are *not* attributes make
  identities with equal attributes distinguishable but not trivially so: exact
  garment shade (small HSV jitter around the named colour), skin tone, hair
  colour, shoe / hat / bag colours, height, build, a shirt pattern (none,
  stripes or a chest logo) and which side the bag / handbag is carried on.
* Pose: every image draws a viewpoint (front, back, facing image-left or
  facing image-right) and a walking phase/amplitude.  In side views the body is
  narrowed, legs and arms swing fore/aft and the far-side limbs are drawn
  behind the torso; in front/back views the swing shows as lifted feet and
  raised hands.  In the back view the face is not drawn (nose/eyes are then
  labelled with visibility 1), the backpack body covers the back, and left and
  right are mirrored (so the cross-body bag strap runs the other way).

Keypoints follow COCO conventions: "left" is the *person's* left (image right
in a front view, image left in a back view), coordinates are pixels of the
saved image, visibility 2 = visible, 1 = labelled but occluded (by an occluder
or, for the face, by the head in a back view / far side in a side view),
0 = outside the image (then x = y = 0).

Nuisance model
--------------
Everything that changes between images of the same identity is scaled by a
single ``difficulty`` float ``d`` (0 = clean images, 1 = default, about
2 = very hard); amplitudes and probabilities below are linear in ``d``.
Identity appearance does not depend on ``d``, and pose, placement, occlusion
and lighting are drawn from separate random streams whose draws do not depend
on ``d`` (only their amplitude), so the same seed gives the same poses and
viewpoints at every difficulty.  Viewpoint and walking phase are natural
variation and are *not* scaled by ``d``.

* Domain style (always applied, not scaled): palette of clothes (Market bright
  summer colours, Duke darker winter colours with more long sleeves and
  coats), the background families (Market: light pavement, greenery, light
  buildings; Duke: snow, wet asphalt, brick, dark trees) and a default light
  (Market warm and bright, Duke cool, darker, lower contrast).
* Camera (fixed per camera, derived from the seed): a background scene (base
  gradient with horizon, low-frequency texture and fixed structures such as
  poles, windows, tiles or bricks), colour cast (per-channel gain), exposure,
  gamma, contrast, sensor noise, optical blur (some cameras much blurrier),
  a resolution loss on some cameras, JPEG quality.  All deviations from
  neutral are multiplied by ``d``.
* Image: random window of the camera scene plus ``Poisson(2.5 d)`` clutter
  shapes (in clothing-like colours) and, sometimes, background pedestrians;
  scale / translation jitter of the person; exposure and colour jitter; a
  linear illumination gradient (shadow); extra blur; and with probability
  ``min(0.2 d, 0.5)`` a partial occlusion by a rectangle (pole, bench/car,
  side wall) or a fragment of a second person in front.

The heavy lifting is done by PIL's ImageDraw on a 2x supersampled canvas which
is then reduced, so one 128 x 64 image costs a few milliseconds.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# one definition of the COCO-17 names / skeleton / flip pairs: the keypoint contract module
from ..coco_keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON

__all__ = [
    "COCO_KEYPOINTS", "COCO_SKELETON", "COCO_FLIP_PAIRS",
    "MARKET_ATTRIBUTES", "MARKET_ATTRIBUTES_TEST_ORDER",
    "DUKE_ATTRIBUTES", "DUKE_ATTRIBUTES_TEST_ORDER",
    "MARKET_UP_COLORS", "MARKET_DOWN_COLORS", "DUKE_UP_COLORS", "DUKE_DOWN_COLORS",
    "DOMAINS", "DEFAULT_NUM_CAMS", "DEFAULT_DIFFICULTY", "VIEWS",
    "Appearance", "CameraModel", "RenderResult",
    "sample_appearance", "make_camera", "render_image", "seed_rng",
]

RGB = Tuple[int, int, int]

# ----------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------
_K = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

#: Field order of the ``train`` struct of the real ``market_attribute.mat``.
MARKET_ATTRIBUTES: Tuple[str, ...] = (
    "age", "backpack", "bag", "handbag",
    "downblack", "downblue", "downbrown", "downgray", "downgreen", "downpink",
    "downpurple", "downwhite", "downyellow",
    "upblack", "upblue", "upgreen", "upgray", "uppurple", "upred", "upwhite", "upyellow",
    "clothes", "down", "up", "hair", "hat", "gender",
)
#: Field order of the ``test`` struct of the real ``market_attribute.mat``.
MARKET_ATTRIBUTES_TEST_ORDER: Tuple[str, ...] = (
    "age", "backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender",
    "upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen",
    "downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray",
    "downblue", "downgreen", "downbrown",
)
#: Field order of the ``train`` struct of the real ``duke_attribute.mat``.
DUKE_ATTRIBUTES: Tuple[str, ...] = (
    "backpack", "bag", "handbag", "boots", "gender", "hat", "shoes", "top",
    "downblack", "downwhite", "downred", "downgray", "downblue", "downgreen", "downbrown",
    "upblack", "upwhite", "upred", "uppurple", "upgray", "upblue", "upgreen", "upbrown",
)
#: Field order of the ``test`` struct of the real ``duke_attribute.mat``.
DUKE_ATTRIBUTES_TEST_ORDER: Tuple[str, ...] = (
    "boots", "shoes", "top", "gender", "hat", "backpack", "bag", "handbag",
    "downblack", "downwhite", "downred", "downgray", "downblue", "downgreen", "downbrown",
    "upblack", "upwhite", "upred", "upgray", "upblue", "upgreen", "uppurple", "upbrown",
)

MARKET_UP_COLORS = ("black", "blue", "green", "gray", "purple", "red", "white", "yellow")
MARKET_DOWN_COLORS = ("black", "blue", "brown", "gray", "green", "pink", "purple", "white", "yellow")
DUKE_UP_COLORS = ("black", "white", "red", "purple", "gray", "blue", "green", "brown")
DUKE_DOWN_COLORS = ("black", "white", "red", "gray", "blue", "green", "brown")

DOMAINS = ("market", "duke")
DEFAULT_NUM_CAMS = {"market": 6, "duke": 8}
DEFAULT_DIFFICULTY = 1.0
VIEWS = ("front", "back", "left", "right")  # left/right: person faces image-left/right

_DOMAIN_CODE = {"market": 1, "duke": 2}
_SS = 2  # supersampling factor of the drawing canvas

# Named colours as HSV ranges: (hue range or None=any, sat range, value range).
_COLOR_HSV = {
    "black": (None, (0.0, 0.35), (0.07, 0.20)),
    "white": (None, (0.0, 0.07), (0.86, 0.97)),
    "gray": (None, (0.0, 0.08), (0.40, 0.64)),
    "red": ((-0.025, 0.02), (0.70, 0.95), (0.62, 0.90)),
    "blue": ((0.58, 0.66), (0.55, 0.90), (0.48, 0.85)),
    "green": ((0.28, 0.40), (0.50, 0.85), (0.38, 0.70)),
    "purple": ((0.75, 0.83), (0.45, 0.75), (0.40, 0.70)),
    "yellow": ((0.12, 0.16), (0.65, 0.95), (0.82, 0.97)),
    "brown": ((0.05, 0.09), (0.50, 0.75), (0.32, 0.50)),
    "pink": ((0.92, 0.97), (0.30, 0.55), (0.82, 0.97)),
}

# Attribute priors (roughly the label frequencies of the real annotation files).
_PRIORS = {
    "market": dict(
        male=0.57, age=(0.04, 0.68, 0.23, 0.05), long_hair_f=0.72, long_hair_m=0.05,
        long_sleeve=0.10, short_lower=0.58, dress_f=0.32, hat=0.06, backpack=0.27,
        bag=0.25, handbag_f=0.18, handbag_m=0.05, boots=0.03, light_shoes=0.35, long_top=0.02,
        up=dict(black=0.15, blue=0.07, green=0.08, gray=0.12, purple=0.05, red=0.11,
                white=0.34, yellow=0.08),
        down=dict(black=0.38, blue=0.16, brown=0.09, gray=0.15, green=0.03, pink=0.05,
                  purple=0.02, white=0.08, yellow=0.04),
    ),
    "duke": dict(
        male=0.56, age=(0.03, 0.55, 0.35, 0.07), long_hair_f=0.75, long_hair_m=0.05,
        long_sleeve=0.88, short_lower=0.06, dress_f=0.08, hat=0.15, backpack=0.60,
        bag=0.17, handbag_f=0.07, handbag_m=0.02, boots=0.27, light_shoes=0.15, long_top=0.16,
        up=dict(black=0.52, white=0.08, red=0.07, purple=0.03, gray=0.12, blue=0.10,
                green=0.04, brown=0.04),
        down=dict(black=0.42, white=0.07, red=0.03, gray=0.12, blue=0.30, green=0.02,
                  brown=0.04),
    ),
}

_SKIN = {
    "market": [(236, 200, 172), (226, 186, 150), (210, 165, 125), (180, 130, 95)],
    "duke": [(240, 205, 180), (225, 182, 148), (198, 150, 110), (150, 105, 72), (105, 72, 50)],
}
_HAIR = [(22, 20, 20), (45, 32, 25), (80, 55, 35), (120, 85, 50), (185, 155, 100)]
_HAIR_P = {"market": (0.55, 0.3, 0.1, 0.04, 0.01), "duke": (0.3, 0.3, 0.2, 0.1, 0.1)}
_GREY_HAIR = [(150, 150, 150), (190, 190, 188), (120, 118, 115)]
_DARK_SHOES = [(28, 28, 30), (65, 45, 32), (60, 60, 66), (40, 35, 50)]
_LIGHT_SHOES = [(225, 225, 220), (205, 190, 160), (190, 195, 205)]
_BAG_COLORS = [(30, 30, 32), (35, 40, 80), (90, 60, 40), (95, 95, 100), (150, 40, 40),
               (40, 90, 60), (200, 190, 170), (120, 80, 140)]


def seed_rng(*entropy: int) -> np.random.Generator:
    """Return a Generator seeded from non-negative integers via ``SeedSequence``."""
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def _named_color(name: str, rng: np.random.Generator, domain: str) -> RGB:
    """Sample a shade of a named colour (small HSV jitter), darker for Duke."""
    hr, sr, vr = _COLOR_HSV[name]
    h = rng.uniform(0.0, 1.0) if hr is None else rng.uniform(*hr) % 1.0
    s = rng.uniform(*sr)
    v = rng.uniform(*vr)
    if domain == "duke":
        v *= 0.84
        s *= 0.9
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: float) -> RGB:
    a = rng.uniform(-amount, amount, size=3)
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, a))  # type: ignore


def _scale(rgb: Sequence[int], f: float) -> RGB:
    return tuple(int(np.clip(c * f, 0, 255)) for c in rgb)  # type: ignore


# ----------------------------------------------------------------------------
# Identity appearance
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Appearance:
    """Fixed appearance of one identity.

    Attribute fields use the Market-1501 / DukeMTMC-attribute encodings
    (1/2, age 1-4); colour names come from the domain's colour vocabulary.
    The remaining fields are fine traits that are not annotated.
    """

    pid: int
    domain: str
    gender: int  # 1 male, 2 female
    age: int  # 1 young, 2 teenager, 3 adult, 4 old
    hair: int  # 1 short, 2 long
    up: int  # sleeve length: 1 long, 2 short
    down: int  # lower-body length: 1 long, 2 short
    clothes: int  # 1 dress, 2 pants
    hat: int  # 1 no, 2 yes
    backpack: int
    bag: int
    handbag: int
    boots: int  # 1 no, 2 yes (Duke)
    shoes: int  # shoe colour 1 dark, 2 light (Duke)
    top: int  # upper garment length 1 short, 2 long coat (Duke)
    up_color: str
    down_color: str
    # fine traits (not annotated)
    up_rgb: RGB
    down_rgb: RGB
    skin_rgb: RGB
    hair_rgb: RGB
    shoe_rgb: RGB
    hat_rgb: RGB
    bag_rgb: RGB
    backpack_rgb: RGB
    pattern: str  # "none", "stripes", "logo"
    pattern_rgb: RGB
    height: float  # relative stature (adult male ~1)
    build: float  # width factor
    bag_side: int  # +1 bag on the person's left hip, -1 right
    hand_side: int  # +1 handbag in the left hand, -1 right

    def market_attributes(self) -> Dict[str, int]:
        """Attributes encoded like ``market_attribute.mat`` (train field order)."""
        vals = dict(age=self.age, backpack=self.backpack, bag=self.bag, handbag=self.handbag,
                    clothes=self.clothes, down=self.down, up=self.up, hair=self.hair,
                    hat=self.hat, gender=self.gender)
        for c in MARKET_DOWN_COLORS:
            vals["down" + c] = 2 if self.down_color == c else 1
        for c in MARKET_UP_COLORS:
            vals["up" + c] = 2 if self.up_color == c else 1
        return {k: int(vals[k]) for k in MARKET_ATTRIBUTES}

    def duke_attributes(self) -> Dict[str, int]:
        """Attributes encoded like ``duke_attribute.mat`` (train field order)."""
        vals = dict(backpack=self.backpack, bag=self.bag, handbag=self.handbag,
                    boots=self.boots, gender=self.gender, hat=self.hat, shoes=self.shoes,
                    top=self.top)
        for c in DUKE_DOWN_COLORS:
            vals["down" + c] = 2 if self.down_color == c else 1
        for c in DUKE_UP_COLORS:
            vals["up" + c] = 2 if self.up_color == c else 1
        return {k: int(vals[k]) for k in DUKE_ATTRIBUTES}

    def attributes(self) -> Dict[str, int]:
        """Attributes of this identity's own domain."""
        return self.market_attributes() if self.domain == "market" else self.duke_attributes()

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(rng: np.random.Generator, probs: Dict[str, float]) -> str:
    names = list(probs)
    p = np.array([probs[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_appearance(domain: str, pid: int, seed: int = 0,
                      rng: Optional[np.random.Generator] = None, **overrides) -> Appearance:
    """Draw the appearance of identity ``pid`` (deterministic in seed/domain/pid).

    ``overrides`` replace fields after sampling (e.g. ``up_color="red"``; when a
    colour name is overridden without its RGB, a matching shade is drawn).
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if rng is None:
        rng = seed_rng(seed, _DOMAIN_CODE[domain], 0xA77, max(pid, 0) + 7)
    P = _PRIORS[domain]
    u = rng.uniform(size=16)  # fixed number of draws for the binary attributes
    gender = 1 if u[0] < P["male"] else 2
    age = int(rng.choice(4, p=np.array(P["age"]) / sum(P["age"]))) + 1
    hair = 2 if u[1] < (P["long_hair_f"] if gender == 2 else P["long_hair_m"]) else 1
    up = 1 if u[2] < P["long_sleeve"] else 2
    clothes = 1 if (gender == 2 and u[3] < P["dress_f"]) else 2
    down = 2 if u[4] < P["short_lower"] else 1
    hat = 2 if u[5] < P["hat"] else 1
    backpack = 2 if u[6] < P["backpack"] else 1
    bag = 2 if u[7] < P["bag"] else 1
    handbag = 2 if u[8] < (P["handbag_f"] if gender == 2 else P["handbag_m"]) else 1
    boots = 2 if u[9] < P["boots"] * (1.6 if gender == 2 else 0.5) else 1
    shoes = 2 if u[10] < P["light_shoes"] else 1
    top = 2 if u[11] < P["long_top"] else 1
    if top == 2:
        up = 1  # coats have long sleeves
    up_color = _choice(rng, P["up"])
    down_color = _choice(rng, P["down"])
    up_rgb = _named_color(up_color, rng, domain)
    down_rgb = _named_color(down_color, rng, domain)
    skins = _SKIN[domain]
    skin_rgb = _jitter(skins[int(rng.integers(len(skins)))], rng, 10)
    if age == 4:
        hair_rgb = _jitter(_GREY_HAIR[int(rng.integers(len(_GREY_HAIR)))], rng, 12)
    else:
        hp = np.array(_HAIR_P[domain])
        hair_rgb = _jitter(_HAIR[int(rng.choice(len(_HAIR), p=hp / hp.sum()))], rng, 10)
    shoe_pool = _LIGHT_SHOES if shoes == 2 else _DARK_SHOES
    shoe_rgb = _jitter(shoe_pool[int(rng.integers(len(shoe_pool)))], rng, 12)
    hat_rgb = _named_color(str(rng.choice(["black", "white", "red", "blue", "gray", "yellow",
                                           "brown", "green"])), rng, domain)
    bag_rgb = _jitter(_BAG_COLORS[int(rng.integers(len(_BAG_COLORS)))], rng, 15)
    backpack_rgb = _jitter(_BAG_COLORS[int(rng.integers(len(_BAG_COLORS)))], rng, 15)
    pattern = str(rng.choice(["none", "stripes", "logo"], p=[0.6, 0.2, 0.2]))
    pattern_rgb = _named_color(str(rng.choice(list(_COLOR_HSV))), rng, domain)
    if pattern != "none" and np.abs(np.subtract(pattern_rgb, up_rgb)).sum() < 90:
        pattern_rgb = _scale(up_rgb, 0.45) if sum(up_rgb) > 300 else _jitter((235, 235, 235), rng, 10)
    stature = {1: 0.80, 2: 0.95, 3: 1.0, 4: 0.97}[age] * (1.0 if gender == 1 else 0.94)
    height = float(np.clip(stature * rng.normal(1.0, 0.035), 0.7, 1.15))
    build = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
    bag_side = int(rng.choice([-1, 1]))
    hand_side = int(rng.choice([-1, 1]))
    app = Appearance(
        pid=int(pid), domain=domain, gender=gender, age=age, hair=hair, up=up, down=down,
        clothes=clothes, hat=hat, backpack=backpack, bag=bag, handbag=handbag, boots=boots,
        shoes=shoes, top=top, up_color=up_color, down_color=down_color, up_rgb=up_rgb,
        down_rgb=down_rgb, skin_rgb=skin_rgb, hair_rgb=hair_rgb, shoe_rgb=shoe_rgb,
        hat_rgb=hat_rgb, bag_rgb=bag_rgb, backpack_rgb=backpack_rgb, pattern=pattern,
        pattern_rgb=pattern_rgb, height=height, build=build, bag_side=bag_side,
        hand_side=hand_side)
    if overrides:
        fields = app.to_dict()
        for key in overrides:
            if key not in fields:
                raise TypeError(f"unknown Appearance field {key!r}")
        fields.update(overrides)
        if "up_color" in overrides and "up_rgb" not in overrides:
            fields["up_rgb"] = _named_color(overrides["up_color"], rng, domain)
        if "down_color" in overrides and "down_rgb" not in overrides:
            fields["down_rgb"] = _named_color(overrides["down_color"], rng, domain)
        app = Appearance(**fields)
    return app


# ----------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------
@dataclass
class CameraModel:
    """Fixed per-camera rendering conditions (see the module docstring)."""

    domain: str
    cam: int  # 1-based
    height: int
    width: int
    background: Image.Image  # scene at canvas resolution, larger than the crop
    gain: np.ndarray  # (3,) per-channel gain including the domain light
    exposure: float
    gamma: float
    contrast: float
    noise: float  # std of sensor noise in 0..255 units
    blur: float  # Gaussian blur radius in output pixels
    lowres: float  # 1 = full resolution, <1 = downsample factor
    jpeg_quality: int
    clutter_palette: List[RGB]


_BG_FAMILIES = {
    "market": dict(
        ground=[(172, 168, 158), (192, 178, 150), (160, 110, 95), (150, 150, 145), (120, 140, 90)],
        upper=[(80, 120, 65), (205, 200, 190), (130, 160, 180), (185, 170, 150), (225, 225, 220),
               (100, 140, 90)],
        light=dict(gain=(1.05, 1.02, 0.95), exposure=1.0, gamma=0.97, contrast=1.05),
    ),
    "duke": dict(
        ground=[(222, 226, 232), (72, 74, 80), (96, 60, 50), (110, 110, 115), (190, 195, 205)],
        upper=[(42, 48, 42), (112, 106, 100), (122, 62, 50), (60, 62, 70), (150, 150, 158),
               (90, 80, 70)],
        light=dict(gain=(0.93, 0.97, 1.06), exposure=0.92, gamma=1.05, contrast=0.92),
    ),
}


def _lowfreq_noise(rng: np.random.Generator, h: int, w: int, cells: Tuple[int, int],
                   amp: float) -> np.ndarray:
    """Smooth random field in [-amp, amp] of shape (h, w) via bilinear upsampling."""
    g = rng.uniform(-1, 1, size=cells).astype(np.float32)
    img = Image.fromarray(((g + 1) * 127.5).astype(np.uint8), "L").resize((w, h), Image.BILINEAR)
    return (np.asarray(img, dtype=np.float32) / 127.5 - 1.0) * amp


def _make_background(domain: str, rng: np.random.Generator, ch: int, cw: int) -> Image.Image:
    """Camera scene (canvas resolution), 1.3x taller and 2.5x wider than the crop."""
    fam = _BG_FAMILIES[domain]
    H, W = int(ch * 1.3), int(cw * 2.5)
    ground = np.array(fam["ground"][int(rng.integers(len(fam["ground"])))], np.float32)
    upper = np.array(fam["upper"][int(rng.integers(len(fam["upper"])))], np.float32)
    ground = ground + rng.uniform(-12, 12, 3)
    upper = upper + rng.uniform(-12, 12, 3)
    horizon = rng.uniform(0.25, 0.6) * H
    yy = np.arange(H, dtype=np.float32)[:, None]
    t = np.clip((yy - horizon) / (0.08 * H) + 0.5, 0, 1)[..., None]  # soft horizon
    grad = (yy / H - 0.5)[..., None] * rng.uniform(-40, 40)
    img = (1 - t) * upper + t * ground + grad
    img = img + _lowfreq_noise(rng, H, W, (6, 10), 18)[..., None]
    img = img + _lowfreq_noise(rng, H, W, (24, 40), 6)[..., None]
    bg = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(bg)
    hz = int(horizon)
    # ground structure: tiles (market) or bricks / tyre tracks (duke)
    style = int(rng.integers(3))
    line_c = tuple(int(c) for c in np.clip(ground * rng.uniform(0.75, 0.9), 0, 255))
    if style == 0:
        step = int(rng.integers(14, 30))
        for y in range(hz + step, H, step):
            draw.line([(0, y), (W, y)], fill=line_c, width=1)
        for x in range(int(rng.integers(step)), W, step * 2):
            draw.line([(x, hz), (x + int(rng.integers(-20, 20)), H)], fill=line_c, width=1)
    elif style == 1:
        y0 = int(hz + rng.uniform(0.2, 0.6) * (H - hz))
        draw.rectangle([0, y0, W, y0 + int(rng.integers(4, 12))],
                       fill=tuple(int(c) for c in np.clip(ground * 1.12, 0, 255)))
    # upper structures: windows / poles / trees / bricks
    n_struct = int(rng.integers(2, 6))
    for _ in range(n_struct):
        kind = int(rng.integers(3))
        col = tuple(int(c) for c in np.clip(upper * rng.uniform(0.5, 1.4) +
                                            rng.uniform(-20, 20, 3), 0, 255))
        x = int(rng.uniform(0, W))
        if kind == 0:  # window / door block
            w, h = int(rng.uniform(0.08, 0.25) * W), int(rng.uniform(0.15, 0.4) * hz + 4)
            y = int(rng.uniform(0.05, 0.7) * max(hz, 10))
            draw.rectangle([x, y, x + w, y + h], fill=col)
        elif kind == 1:  # pole
            w = int(rng.integers(3, 9))
            draw.rectangle([x, 0, x + w, int(hz + rng.uniform(0.1, 0.5) * (H - hz))], fill=col)
        else:  # tree crown / bush
            r = int(rng.uniform(0.08, 0.2) * W)
            y = int(hz - rng.uniform(0.0, 0.5) * r)
            draw.ellipse([x - r, y - r, x + r, y + r // 2], fill=col)
    if domain == "duke" and rng.uniform() < 0.5:  # brick wall rows
        col = tuple(int(c) for c in np.clip(upper * 0.7, 0, 255))
        for y in range(0, hz, 9):
            draw.line([(0, y), (W, y)], fill=col, width=1)
    return bg


def make_camera(domain: str, cam: int, seed: int = 0, height: int = 128, width: int = 64,
                difficulty: float = DEFAULT_DIFFICULTY) -> CameraModel:
    """Build the deterministic model of camera ``cam`` (1-based) of a domain."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    d = float(difficulty)
    rng = seed_rng(seed, _DOMAIN_CODE[domain], 0xCA, cam)
    fam = _BG_FAMILIES[domain]
    bg = _make_background(domain, rng, height * _SS, width * _SS)
    u = rng.normal(size=8)
    v = rng.uniform(size=6)
    light = fam["light"]
    gain = np.array(light["gain"], np.float32) * np.exp(0.10 * d * u[:3]).astype(np.float32)
    exposure = float(light["exposure"] * math.exp(0.22 * d * u[3]))
    gamma = float(light["gamma"] * math.exp(0.18 * d * u[4]))
    contrast = float(light["contrast"] * math.exp(0.15 * d * u[5]))
    noise = float(d * (1.0 + 4.0 * v[0]))
    blur = float(d * (0.2 + 0.5 * v[1] + (0.9 if v[2] < 0.35 else 0.0)))
    if domain == "market":
        blur *= 0.7  # market: sharper
    lowres = float(1.0 - d * (0.25 + 0.25 * v[3]) if v[4] < 0.35 else 1.0)
    lowres = float(np.clip(lowres, 0.3, 1.0))
    jpeg_quality = int(np.clip(round(95 - d * (10 + 25 * v[5])), 30, 95))
    # clothing-like colours (half of them washed out) confuse colour-based matching
    base = [_named_color(n, rng, domain) for n in _COLOR_HSV]
    base = [c if i % 2 == 0 else tuple(int(0.5 * x + 60) for x in c) for i, c in enumerate(base)]
    clutter = base + [tuple(int(c) for c in x) for x in fam["upper"] + fam["ground"]]
    return CameraModel(domain=domain, cam=int(cam), height=int(height), width=int(width),
                       background=bg, gain=gain, exposure=exposure, gamma=gamma,
                       contrast=contrast, noise=noise, blur=blur, lowres=lowres,
                       jpeg_quality=jpeg_quality, clutter_palette=clutter)


# ----------------------------------------------------------------------------
# Body geometry
# ----------------------------------------------------------------------------
@dataclass
class _Body:
    """Joint positions (canvas pixels) and body measures for one pose."""

    kp: np.ndarray  # (17, 2)
    vis: np.ndarray  # (17,) 2 or 1 (self-occlusion)
    neck: Tuple[float, float]
    head_box: Tuple[float, float, float, float]
    top: float
    hp: float  # person height in canvas px
    sw: float  # shoulder half width (outer)
    hw: float  # hip half width (outer)
    view: str
    lr: float  # x direction of the person's left (front +1, back -1, side 0)
    dirx: int  # facing direction for side views (+1 right, -1 left), 0 otherwise
    narrow: float  # width compression factor


def _pose_body(app: Appearance, view: str, phase: float, amp: float, cx: float, top: float,
               hp: float) -> _Body:
    """Compute the 2-D skeleton of ``app`` walking in ``view``."""
    child = app.age == 1
    head_h = (0.165 if child else 0.14 if app.age == 2 else 0.13) * (1.0 / app.height) ** 0.3
    head_h = min(head_h, 0.19)
    head_w = 0.76 * head_h
    sh_y = head_h + 0.045
    hip_y = 0.53 + (0.02 if child else 0.0)
    knee_y, ankle_y = 0.755, 0.955
    female = app.gender == 2
    sw = (0.108 if female else 0.125) * app.build * (0.92 if child else 1.0)
    hw = (0.098 if female else 0.085) * app.build * (0.92 if child else 1.0)
    up_len, fore_len = 0.165, 0.155
    thigh, shin = knee_y - hip_y, ankle_y - knee_y

    kp = np.zeros((17, 2), np.float64)
    vis = np.full(17, 2, np.int64)
    side = view in ("left", "right")
    dirx = (1 if view == "right" else -1) if side else 0
    lr = 1.0 if view == "front" else (-1.0 if view == "back" else 0.0)
    narrow = 0.42 if side else 1.0
    s_l = math.sin(phase) * amp  # left-leg swing angle (forward positive)

    def P(x, y):  # person units -> canvas
        return (cx + x * hp, top + y * hp)

    if not side:
        sj = 0.84 * sw
        hj = 0.62 * hw
        for name, sgn, swing in (("left", 1.0, s_l), ("right", -1.0, -s_l)):
            x = lr * sgn
            lift = 0.09 * max(0.0, swing)  # foot lifted when the leg swings forward
            arm_fwd = max(0.0, -swing)  # arms swing opposite to the legs
            kp[_K[f"{name}_shoulder"]] = P(x * sj, sh_y)
            kp[_K[f"{name}_elbow"]] = P(x * (sj + 0.018), sh_y + up_len - 0.03 * arm_fwd)
            kp[_K[f"{name}_wrist"]] = P(x * (sj + 0.012 - 0.03 * arm_fwd),
                                        sh_y + up_len + fore_len - 0.11 * arm_fwd)
            kp[_K[f"{name}_hip"]] = P(x * hj, hip_y)
            kp[_K[f"{name}_knee"]] = P(x * (hj * 0.92), knee_y - 0.5 * lift)
            kp[_K[f"{name}_ankle"]] = P(x * (hj * 0.85), ankle_y - lift)
        face_y = 0.0
        kp[_K["nose"]] = P(0.0, face_y + 0.62 * head_h)
        kp[_K["left_eye"]] = P(lr * 0.22 * head_w, 0.45 * head_h)
        kp[_K["right_eye"]] = P(-lr * 0.22 * head_w, 0.45 * head_h)
        kp[_K["left_ear"]] = P(lr * 0.5 * head_w, 0.5 * head_h)
        kp[_K["right_ear"]] = P(-lr * 0.5 * head_w, 0.5 * head_h)
        if view == "back":
            vis[[0, 1, 2]] = 1
            if app.hair == 2:
                vis[[3, 4]] = 1
        head_cx = cx
    else:
        far, near = ("left", "right") if dirx > 0 else ("right", "left")
        for name, swing in (("left", s_l), ("right", -s_l)):
            off = (0.12 if name == far else -0.12) * sw * dirx
            sh = np.array(P(off, sh_y))
            beta = -swing * 0.8
            el = sh + hp * np.array([dirx * math.sin(beta) * up_len, math.cos(beta) * up_len])
            gamma = beta + 0.35 + 0.4 * max(0.0, beta)
            wr = el + hp * np.array([dirx * math.sin(gamma) * fore_len, math.cos(gamma) * fore_len])
            hip = np.array(P(off * 0.6, hip_y))
            kn = hip + hp * np.array([dirx * math.sin(swing) * thigh, math.cos(swing) * thigh])
            shin_a = 0.5 * swing if swing > 0 else swing * 1.6
            an = kn + hp * np.array([dirx * math.sin(shin_a) * shin, math.cos(shin_a) * shin])
            kp[_K[f"{name}_shoulder"]] = sh
            kp[_K[f"{name}_elbow"]] = el
            kp[_K[f"{name}_wrist"]] = wr
            kp[_K[f"{name}_hip"]] = hip
            kp[_K[f"{name}_knee"]] = kn
            kp[_K[f"{name}_ankle"]] = an
        head_cx = cx + dirx * 0.06 * head_w * hp
        kp[_K["nose"]] = P(dirx * 0.56 * head_w, 0.6 * head_h)
        kp[_K[f"{near}_eye"]] = P(dirx * 0.3 * head_w, 0.45 * head_h)
        kp[_K[f"{far}_eye"]] = P(dirx * 0.36 * head_w, 0.44 * head_h)
        kp[_K[f"{near}_ear"]] = P(-dirx * 0.04 * head_w, 0.5 * head_h)
        kp[_K[f"{far}_ear"]] = P(-dirx * 0.0 * head_w, 0.49 * head_h)
        vis[[_K[f"{far}_eye"], _K[f"{far}_ear"], _K[f"{far}_shoulder"], _K[f"{far}_hip"]]] = 1
        if app.hair == 2:
            vis[_K[f"{near}_ear"]] = 1
    head_box = (head_cx - 0.5 * head_w * hp, top, head_cx + 0.5 * head_w * hp, top + head_h * hp)
    neck = (head_cx, top + (head_h + 0.01) * hp)
    return _Body(kp=kp, vis=vis, neck=neck, head_box=head_box, top=top, hp=hp, sw=sw * hp,
                 hw=hw * hp, view=view, lr=lr, dirx=dirx, narrow=narrow)


# ----------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------
def _limb(draw: ImageDraw.ImageDraw, a, b, width: float, color: RGB) -> None:
    w = max(1, int(round(width)))
    draw.line([tuple(a), tuple(b)], fill=color, width=w)
    r = width / 2.0
    for p in (a, b):
        draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=color)


def _lerp(a, b, t: float):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _draw_leg(draw, body: _Body, app: Appearance, name: str) -> None:
    hp = body.hp
    hip, knee, ankle = (body.kp[_K[f"{name}_{j}"]] for j in ("hip", "knee", "ankle"))
    t_w = (0.078 if app.gender == 1 else 0.07) * hp * app.build
    s_w = 0.058 * hp * app.build
    bare = app.down == 2 or app.clothes == 1  # skin shows below the garment
    leg_c = app.skin_rgb if bare else app.down_rgb
    if app.clothes == 1 and app.down == 1:
        leg_c = _scale(app.skin_rgb, 0.9)
    _limb(draw, hip, knee, t_w, leg_c)
    _limb(draw, knee, ankle, s_w, leg_c)
    if app.clothes == 2 and app.down == 2:  # shorts
        _limb(draw, hip, _lerp(hip, knee, 0.72), t_w * 1.12, app.down_rgb)
    if app.boots == 2:
        _limb(draw, _lerp(ankle, knee, 0.62), ankle, s_w * 1.15, app.shoe_rgb)
    # shoe
    fx = body.dirx * 0.035 * hp
    sh_w, sh_h = (0.05 if body.dirx == 0 else 0.065) * hp, 0.028 * hp
    ax, ay = ankle[0] + fx, ankle[1] + 0.02 * hp
    draw.ellipse([ax - sh_w, ay - sh_h, ax + sh_w, ay + sh_h], fill=app.shoe_rgb)


def _draw_arm(draw, body: _Body, app: Appearance, name: str) -> None:
    hp = body.hp
    sh, el, wr = (body.kp[_K[f"{name}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
    u_w = (0.052 if app.gender == 1 else 0.046) * hp * app.build
    f_w = 0.042 * hp * app.build
    long_sleeve = app.up == 1 or app.top == 2
    _limb(draw, sh, el, u_w, app.up_rgb if long_sleeve else app.skin_rgb)
    _limb(draw, el, wr, f_w, app.up_rgb if long_sleeve else app.skin_rgb)
    if not long_sleeve:
        _limb(draw, sh, _lerp(sh, el, 0.55), u_w * 1.15, app.up_rgb)
    r = 0.026 * hp
    hx, hy = _lerp(el, wr, 1.12)
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=app.skin_rgb)


def _torso_poly(body: _Body, app: Appearance, bottom_y: float, flare: float = 0.0):
    """Torso outline (list of points) from shoulders down to ``bottom_y`` (canvas)."""
    sl, sr = body.kp[_K["left_shoulder"]], body.kp[_K["right_shoulder"]]
    cx = 0.5 * (sl[0] + sr[0])
    sh_y = 0.5 * (sl[1] + sr[1])
    hp = body.hp
    n = body.narrow
    sw = body.sw * n
    hw = body.hw * n
    waist = 0.5 * (sw + hw) * 0.92
    shift = body.dirx * 0.02 * hp  # chest slightly forward in side views
    hip_y = 0.5 * (body.kp[_K["left_hip"], 1] + body.kp[_K["right_hip"], 1])
    waist_y = sh_y + 0.6 * (hip_y - sh_y)
    bottom_hw = hw * 1.02 + flare * hp
    pts = [
        (cx - sw * 0.75 + shift, sh_y - 0.022 * hp), (cx + sw * 0.75 + shift, sh_y - 0.022 * hp),
        (cx + sw + shift, sh_y + 0.01 * hp), (cx + waist, waist_y),
        (cx + bottom_hw, bottom_y), (cx - bottom_hw, bottom_y),
        (cx - waist, waist_y), (cx - sw + shift, sh_y + 0.01 * hp),
    ]
    return pts, cx, sh_y, waist_y, sw, waist, bottom_hw


def _draw_lower_trunk(draw, body: _Body, app: Appearance) -> None:
    """Pants/shorts crotch block, or the dress skirt."""
    hp = body.hp
    hl, hr = body.kp[_K["left_hip"]], body.kp[_K["right_hip"]]
    cx = 0.5 * (hl[0] + hr[0])
    hip_y = 0.5 * (hl[1] + hr[1])
    hw = body.hw * body.narrow
    if app.clothes == 2:
        crotch = hip_y + 0.07 * hp
        draw.polygon([(cx - hw, hip_y - 0.06 * hp), (cx + hw, hip_y - 0.06 * hp),
                      (cx + hw * 1.02, crotch), (cx - hw * 1.02, crotch)], fill=app.down_rgb)
    else:
        top_y = hip_y - 0.07 * hp
        hem = (0.72 if app.down == 2 else 0.87) * hp + body.top
        spread = (1.9 if body.dirx == 0 else 1.5) * hw + (0.05 * hp if app.down == 1 else 0.0)
        draw.polygon([(cx - hw * 0.95, top_y), (cx + hw * 0.95, top_y),
                      (cx + spread, hem), (cx - spread, hem)], fill=app.down_rgb)


def _draw_torso(draw, body: _Body, app: Appearance) -> None:
    hp = body.hp
    hip_y = 0.5 * (body.kp[_K["left_hip"], 1] + body.kp[_K["right_hip"], 1])
    coat = app.top == 2
    bottom = hip_y + (0.17 if coat else 0.025) * hp
    pts, cx, sh_y, waist_y, sw, waist, bhw = _torso_poly(body, app, bottom,
                                                         flare=0.035 if coat else 0.0)
    # neck
    nx, ny = body.neck
    nw = 0.028 * hp
    draw.rectangle([nx - nw, ny - 0.02 * hp, nx + nw, sh_y], fill=_scale(app.skin_rgb, 0.93))
    draw.polygon(pts, fill=app.up_rgb)
    if app.pattern == "stripes":
        step = max(3.0, 0.04 * hp)
        y = sh_y + 0.02 * hp
        while y < bottom - 0.01 * hp:
            if y < waist_y:
                half = sw + (waist - sw) * (y - sh_y) / max(1.0, waist_y - sh_y)
            else:
                half = waist + (bhw - waist) * (y - waist_y) / max(1.0, bottom - waist_y)
            half *= 0.96
            draw.line([(cx - half, y), (cx + half, y)], fill=app.pattern_rgb,
                      width=max(1, int(step * 0.4)))
            y += step
    elif app.pattern == "logo" and body.view == "front":
        lw, lh = 0.55 * sw, 0.06 * hp
        ly = sh_y + 0.06 * hp
        draw.rectangle([cx - lw / 2, ly, cx + lw / 2, ly + lh], fill=app.pattern_rgb)
    if coat:  # coat opening / zipper line
        if body.view == "front":
            draw.line([(cx, sh_y + 0.02 * hp), (cx, bottom)], fill=_scale(app.up_rgb, 0.6),
                      width=max(1, int(0.008 * hp)))


def _draw_head(draw, body: _Body, app: Appearance) -> None:
    hp = body.hp
    x0, y0, x1, y1 = body.head_box
    w, h = x1 - x0, y1 - y0
    hair = app.hair_rgb
    pad = 0.06 * w
    if body.view == "back":
        draw.ellipse([x0 - pad, y0 - pad, x1 + pad, y1], fill=hair)
    elif body.view == "front":
        draw.ellipse([x0 - pad, y0 - pad, x1 + pad, y1 - 0.2 * h], fill=hair)
        draw.ellipse([x0 + 0.08 * w, y0 + 0.24 * h, x1 - 0.08 * w, y1], fill=app.skin_rgb)
        er = max(1.0, 0.05 * w)
        for name in ("left_eye", "right_eye"):
            ex, ey = body.kp[_K[name]]
            draw.ellipse([ex - er, ey - er * 0.8, ex + er, ey + er * 0.8], fill=(30, 25, 25))
        mx, my = body.kp[_K["nose"]]
        draw.line([(mx - 0.12 * w, my + 0.17 * h), (mx + 0.12 * w, my + 0.17 * h)],
                  fill=_scale(app.skin_rgb, 0.6), width=1)
    else:
        dx = body.dirx
        draw.ellipse([x0, y0 + 0.05 * h, x1, y1], fill=app.skin_rgb)
        # hair on the top and the back of the head
        if dx > 0:
            draw.pieslice([x0 - pad, y0 - pad, x1 + pad, y1 + 0.3 * h], 150, 350, fill=hair)
        else:
            draw.pieslice([x0 - pad, y0 - pad, x1 + pad, y1 + 0.3 * h], 190, 30, fill=hair)
        nx, ny = body.kp[_K["nose"]]
        draw.polygon([(nx - dx * 0.12 * w, ny - 0.1 * h), (nx + dx * 0.05 * w, ny + 0.04 * h),
                      (nx - dx * 0.12 * w, ny + 0.06 * h)], fill=app.skin_rgb)
        near = "right" if dx > 0 else "left"
        ex, ey = body.kp[_K[f"{near}_eye"]]
        er = max(1.0, 0.05 * w)
        draw.ellipse([ex - er, ey - er * 0.8, ex + er, ey + er * 0.8], fill=(30, 25, 25))
    if app.hat == 2:
        hc = app.hat_rgb
        draw.chord([x0 - pad, y0 - 0.12 * h, x1 + pad, y0 + 0.7 * h], 180, 360, fill=hc)
        if body.view == "front":
            draw.ellipse([x0 - 0.1 * w, y0 + 0.2 * h, x1 + 0.1 * w, y0 + 0.36 * h], fill=_scale(hc, 0.8))
        elif body.view != "back":
            bx = x1 if body.dirx > 0 else x0
            draw.polygon([(bx - 0.2 * w, y0 + 0.22 * h), (bx + body.dirx * 0.35 * w, y0 + 0.3 * h),
                          (bx - 0.2 * w, y0 + 0.34 * h)], fill=_scale(hc, 0.8))


def _draw_long_hair(draw, body: _Body, app: Appearance) -> None:
    """Long hair falling to the shoulders (behind the head in front view)."""
    hp = body.hp
    x0, y0, x1, y1 = body.head_box
    w = x1 - x0
    sh_y = 0.5 * (body.kp[_K["left_shoulder"], 1] + body.kp[_K["right_shoulder"], 1])
    bottom = sh_y + 0.05 * hp
    if body.view in ("front", "back"):
        draw.polygon([(x0 - 0.1 * w, y0 + 0.3 * w), (x1 + 0.1 * w, y0 + 0.3 * w),
                      (x1 + 0.22 * w, bottom), (x0 - 0.22 * w, bottom)], fill=app.hair_rgb)
    else:
        bx = x0 if body.dirx > 0 else x1  # back of the head
        fx = 0.5 * (x0 + x1)
        draw.polygon([(fx, y0 + 0.3 * w), (bx, y0 + 0.3 * w),
                      (bx - body.dirx * 0.18 * w, bottom), (fx, bottom)], fill=app.hair_rgb)


def _person_x(body: _Body, side: int, offset: float) -> float:
    """x of a point ``offset`` px outward on the person's ``side`` (+1 left)."""
    if body.dirx == 0:
        return body.neck[0] + side * body.lr * offset
    return body.neck[0]


def _draw_backpack(draw, body: _Body, app: Appearance, layer: str) -> None:
    hp = body.hp
    sl, sr = body.kp[_K["left_shoulder"]], body.kp[_K["right_shoulder"]]
    cx = 0.5 * (sl[0] + sr[0])
    sh_y = 0.5 * (sl[1] + sr[1])
    col = app.backpack_rgb
    strap = _scale(col, 0.7)
    sw = body.sw
    if body.view == "back" and layer == "front":
        draw.rounded_rectangle([cx - 0.78 * sw, sh_y + 0.01 * hp, cx + 0.78 * sw, sh_y + 0.25 * hp],
                               radius=0.03 * hp, fill=col)
        draw.rectangle([cx - 0.5 * sw, sh_y + 0.15 * hp, cx + 0.5 * sw, sh_y + 0.22 * hp],
                       fill=_scale(col, 0.8))
    elif body.view == "front" and layer == "front":
        for s in (-1, 1):
            x = cx + s * 0.55 * sw
            draw.line([(x, sh_y - 0.01 * hp), (x + s * 0.05 * sw, sh_y + 0.22 * hp)], fill=strap,
                      width=max(1, int(0.016 * hp)))
    elif body.dirx != 0:
        bx = cx - body.dirx * 0.5 * sw * body.narrow
        if layer == "back":
            x2 = bx - body.dirx * 0.12 * hp
            draw.rounded_rectangle([min(bx, x2), sh_y + 0.01 * hp, max(bx, x2), sh_y + 0.24 * hp],
                                   radius=0.02 * hp, fill=col)
        else:
            draw.line([(cx + body.dirx * 0.02 * hp, sh_y - 0.01 * hp),
                       (cx - body.dirx * 0.01 * hp, sh_y + 0.2 * hp)], fill=strap,
                      width=max(1, int(0.014 * hp)))


def _draw_bag(draw, body: _Body, app: Appearance, layer: str) -> None:
    """Cross-body shoulder bag hanging on the person's ``bag_side`` hip."""
    hp = body.hp
    side = app.bag_side
    hip_y = 0.5 * (body.kp[_K["left_hip"], 1] + body.kp[_K["right_hip"], 1])
    sh_name = "right" if side > 0 else "left"  # strap over the opposite shoulder
    sh = body.kp[_K[f"{sh_name}_shoulder"]]
    if body.dirx == 0:
        bx = _person_x(body, side, body.hw + 0.03 * hp)
    else:
        near_side = -1 if body.dirx > 0 else 1  # facing right: the right side (-1) is near
        if (layer == "front") != (side == near_side):
            return
        bx = body.neck[0] - body.dirx * 0.01 * hp
    if layer == "back" and body.dirx == 0:
        return
    bw, bh = 0.065 * hp, 0.1 * hp
    by = hip_y - 0.02 * hp
    draw.line([(sh[0], sh[1] - 0.01 * hp), (bx, by)], fill=_scale(app.bag_rgb, 0.75),
              width=max(1, int(0.012 * hp)))
    draw.rounded_rectangle([bx - bw, by, bx + bw, by + bh], radius=0.015 * hp, fill=app.bag_rgb)


def _draw_handbag(draw, body: _Body, app: Appearance) -> None:
    hp = body.hp
    name = "left" if app.hand_side > 0 else "right"
    wx, wy = body.kp[_K[f"{name}_wrist"]]
    bw, bh = 0.05 * hp, 0.075 * hp
    top = wy + 0.035 * hp
    draw.arc([wx - 0.03 * hp, wy, wx + 0.03 * hp, top + 0.03 * hp], 180, 360,
             fill=_scale(app.bag_rgb, 0.7), width=max(1, int(0.01 * hp)))
    draw.rounded_rectangle([wx - bw, top, wx + bw, top + bh], radius=0.012 * hp, fill=app.bag_rgb)


def _draw_person(draw: ImageDraw.ImageDraw, app: Appearance, body: _Body) -> None:
    """Draw ``app`` in pose ``body`` with correct layer order."""
    side_view = body.dirx != 0
    if side_view:
        far, near = ("left", "right") if body.dirx > 0 else ("right", "left")
        _draw_arm(draw, body, app, far)
        _draw_leg(draw, body, app, far)
        if app.backpack == 2:
            _draw_backpack(draw, body, app, "back")
        if app.bag == 2:
            _draw_bag(draw, body, app, "back")
        _draw_leg(draw, body, app, near)
        _draw_lower_trunk(draw, body, app)
        if app.hair == 2:
            _draw_long_hair(draw, body, app)
        _draw_torso(draw, body, app)
        if app.backpack == 2:
            _draw_backpack(draw, body, app, "front")
        if app.bag == 2:
            _draw_bag(draw, body, app, "front")
        _draw_arm(draw, body, app, near)
        if app.handbag == 2:
            _draw_handbag(draw, body, app)
        _draw_head(draw, body, app)
        return
    if app.hair == 2 and body.view == "front":
        _draw_long_hair(draw, body, app)
    for name in ("left", "right"):
        _draw_leg(draw, body, app, name)
    _draw_lower_trunk(draw, body, app)
    _draw_torso(draw, body, app)
    if app.backpack == 2:
        _draw_backpack(draw, body, app, "front")
    for name in ("left", "right"):
        _draw_arm(draw, body, app, name)
    if app.hair == 2 and body.view == "back":
        _draw_long_hair(draw, body, app)
    if app.bag == 2:
        _draw_bag(draw, body, app, "front")
    if app.handbag == 2:
        _draw_handbag(draw, body, app)
    _draw_head(draw, body, app)


def _draw_silhouette(draw, rng: np.random.Generator, cx: float, top: float, hp: float,
                     palette: List[RGB], shade: float = 1.0, mask: bool = False) -> None:
    """Cheap blocky pedestrian used for occluders and background people.

    With ``mask=True`` every part is filled with 255 (for an "L" mask image);
    the same random draws are consumed either way.
    """
    def col():
        c = _scale(palette[int(rng.integers(len(palette)))], shade)
        return 255 if mask else c
    skin = 255 if mask else _scale((215, 175, 140), shade)
    w = 0.12 * hp
    draw.ellipse([cx - 0.05 * hp, top, cx + 0.05 * hp, top + 0.13 * hp], fill=skin)
    lower = col()
    draw.rectangle([cx - 0.8 * w, top + 0.5 * hp, cx - 0.1 * w, top + 0.97 * hp], fill=lower)
    draw.rectangle([cx + 0.1 * w, top + 0.5 * hp, cx + 0.8 * w, top + 0.97 * hp], fill=lower)
    draw.rounded_rectangle([cx - w, top + 0.15 * hp, cx + w, top + 0.56 * hp],
                           radius=0.03 * hp, fill=col())


# ----------------------------------------------------------------------------
# Image-level rendering
# ----------------------------------------------------------------------------
@dataclass
class RenderResult:
    """Rendered crop with COCO keypoints (``(17, 3)`` x, y, v) and person bbox."""

    image: Image.Image
    keypoints: np.ndarray
    bbox: Tuple[float, float, float, float]  # x, y, w, h in image pixels (clipped)
    view: str
    occluded: bool
    #: (H, W) uint8 0/255, the visible pixels of the pedestrian (person minus occluders); only when
    #: ``render_image(..., silhouette=True)``, else None
    silhouette: Optional[np.ndarray] = None


def _person_extent(body: _Body) -> Tuple[float, float, float, float]:
    xs = body.kp[:, 0]
    pad = max(body.sw * body.narrow, 0.05 * body.hp)
    return (float(xs.min() - 0.5 * pad), body.top, float(xs.max() + 0.5 * pad),
            body.top + body.hp)


def _person_silhouette(app: Appearance, body: _Body, canvas_size: Tuple[int, int],
                       occ_mask: Optional[Image.Image]) -> np.ndarray:
    """(H, W) uint8 mask (255 = pedestrian) at output resolution: the pixels the person drawing covers
    (drawn once on black and once on white; a pixel is the person's where both agree), minus the
    occluders in front of it, reduced by the supersampling factor (a pixel is on when >= half of its
    supersampled pixels are)."""
    a = Image.new("RGB", canvas_size, (0, 0, 0))
    b = Image.new("RGB", canvas_size, (255, 255, 255))
    _draw_person(ImageDraw.Draw(a), app, body)
    _draw_person(ImageDraw.Draw(b), app, body)
    on = (np.asarray(a) == np.asarray(b)).all(-1)
    if occ_mask is not None:
        on &= np.asarray(occ_mask) == 0
    CW, CH = canvas_size
    frac = on.reshape(CH // _SS, _SS, CW // _SS, _SS).mean(axis=(1, 3))
    return np.where(frac >= 0.5, 255, 0).astype(np.uint8)


def render_image(app: Optional[Appearance], camera: CameraModel, rng: np.random.Generator,
                 difficulty: float = DEFAULT_DIFFICULTY, kind: str = "normal",
                 view: Optional[str] = None, silhouette: bool = False) -> RenderResult:
    """Render one crop of identity ``app`` seen by ``camera``.

    ``kind``: ``"normal"`` (a well-cropped pedestrian), ``"background"`` (no
    person; ``app`` may be None), ``"badcrop"`` (person much too large / shifted
    so only a part is visible, like Market's distractors) or ``"junk"`` (heavily
    truncated, small or blurred person).  ``view`` forces a viewpoint.
    The random stream consumed from ``rng`` does not depend on ``difficulty``.
    ``silhouette``: also return the pedestrian's visible pixels (:func:`_person_silhouette`; the
    rendered image and keypoints are the same either way).
    """
    d = max(0.0, float(difficulty))
    H, W = camera.height, camera.width
    CH, CW = H * _SS, W * _SS
    # independent sub-streams with fixed draw counts -> order-independent layout
    subs = [np.random.default_rng(s) for s in rng.integers(0, 2 ** 63 - 1, size=6)]
    r_pose, r_place, r_bg, r_occ, r_light, r_noise = subs

    # --- pose -------------------------------------------------------------
    pv = r_pose.uniform(size=4)
    if view is None:
        view = VIEWS[int(np.searchsorted([0.34, 0.68, 0.84], pv[0], side="right"))]
    phase = 2 * math.pi * pv[1]
    amp = 0.12 + 0.33 * pv[2]

    # --- placement (scale / translation jitter) --------------------------
    pz = r_place.normal(size=3)
    pu = r_place.uniform(size=4)
    fill = 0.86 + 0.1 * (app.height - 0.95) if app is not None else 0.86
    fill = fill * math.exp(0.06 * d * np.clip(pz[0], -2.5, 2.5))
    hp = fill * CH
    top = (CH - hp) * 0.5 + 0.035 * d * CH * np.clip(pz[1], -2.5, 2.5)
    cx = CW * 0.5 + 0.06 * d * CW * np.clip(pz[2], -2.5, 2.5)
    if kind == "badcrop":
        mode = int(pu[0] * 3)
        if mode == 0:  # far too large: only the torso / legs are inside
            hp = CH * (1.6 + 1.2 * pu[1])
            top = -pu[2] * (hp - CH)
        elif mode == 1:  # shifted sideways: half the body outside
            cx = CW * (0.5 + (0.55 + 0.25 * pu[1]) * (1 if pu[2] < 0.5 else -1))
        else:  # shifted vertically
            top = CH * (0.45 + 0.3 * pu[1]) * (1 if pu[2] < 0.5 else -1)
    elif kind == "junk":
        mode = int(pu[0] * 2)
        if mode == 0:
            hp = CH * (0.35 + 0.2 * pu[1])
            top = CH * (0.05 + 0.5 * pu[2])
            cx = CW * (0.2 + 0.6 * pu[3])
        else:
            cx = CW * (0.5 + 0.75 * (1 if pu[2] < 0.5 else -1))
            top = (CH - hp) * 0.5 + CH * 0.25 * (pu[3] - 0.5)

    # --- background -------------------------------------------------------
    bgW, bgH = camera.background.size
    ox = int(r_bg.integers(0, bgW - CW + 1))
    oy = int(r_bg.integers(0, bgH - CH + 1))
    canvas = camera.background.crop((ox, oy, ox + CW, oy + CH))
    draw = ImageDraw.Draw(canvas)
    n_clutter = int(r_bg.poisson(2.5 * d)) if d > 0 else 0
    n_clutter = min(n_clutter, 10)
    cl = r_bg.uniform(size=(10, 6))
    for i in range(n_clutter):
        c = camera.clutter_palette[int(cl[i, 0] * len(camera.clutter_palette))]
        x, y = cl[i, 1] * CW, cl[i, 2] * CH
        w, h = (0.08 + 0.35 * cl[i, 3]) * CW, (0.04 + 0.2 * cl[i, 4]) * CH
        if cl[i, 5] < 0.45:
            draw.rectangle([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=c)
        elif cl[i, 5] < 0.8:
            draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=c)
        else:
            draw.line([(x - w / 2, y), (x + w / 2, y + h / 3)], fill=c, width=max(1, int(h / 8)))
    bgp = r_bg.uniform(size=4)
    if bgp[0] < 0.3 * d:  # a pedestrian further away, behind the target
        _draw_silhouette(draw, r_bg, bgp[1] * CW, CH * (0.1 + 0.3 * bgp[2]),
                         CH * (0.4 + 0.3 * bgp[3]), camera.clutter_palette, shade=0.85)

    # --- person -----------------------------------------------------------
    keypoints = np.zeros((17, 3), np.float64)
    bbox = (0.0, 0.0, 0.0, 0.0)
    body = None
    if kind != "background" and app is not None:
        body = _pose_body(app, view, phase, amp, cx, top, hp)
        _draw_person(draw, app, body)

    # --- occlusion --------------------------------------------------------
    ou = r_occ.uniform(size=8)
    p_occ = min(0.2 * d, 0.5)
    occ_mask = None
    occluded = False
    if body is not None and kind == "normal" and ou[0] < p_occ:
        occluded = True
        occ_mask = Image.new("L", (CW, CH), 0)
        mdraw = ImageDraw.Draw(occ_mask)
        c = camera.clutter_palette[int(ou[1] * len(camera.clutter_palette))]
        typ = int(ou[2] * 4)
        if typ == 0:  # pole
            w = CW * (0.1 + 0.12 * ou[3])
            x = CW * (0.2 + 0.6 * ou[4])
            box = [x - w / 2, -1, x + w / 2, CH + 1]
        elif typ == 1:  # bench / car / bush covering the legs
            y = CH * (0.55 + 0.25 * ou[3])
            box = [-1, y, CW + 1, CH + 1]
        elif typ == 2:  # side wall / door frame
            w = CW * (0.25 + 0.25 * ou[3])
            box = [-1, -1, w, CH + 1] if ou[4] < 0.5 else [CW - w, -1, CW + 1, CH + 1]
        else:
            box = None
        if box is not None:
            draw.rectangle(box, fill=c)
            mdraw.rectangle(box, fill=255)
        else:  # fragment of a second person walking in front
            ocx = CW * (0.5 + (0.45 + 0.25 * ou[3]) * (1 if ou[4] < 0.5 else -1))
            otop = CH * (0.02 + 0.1 * ou[5])
            ohp = CH * (1.0 + 0.2 * ou[6])
            sub = np.random.default_rng(int(ou[7] * 2 ** 31))
            _draw_silhouette(draw, sub, ocx, otop, ohp, camera.clutter_palette)
            sub = np.random.default_rng(int(ou[7] * 2 ** 31))
            _draw_silhouette(mdraw, sub, ocx, otop, ohp, camera.clutter_palette, mask=True)

    sil = None
    if silhouette:
        sil = np.zeros((H, W), np.uint8)
        if body is not None:
            sil = _person_silhouette(app, body, (CW, CH), occ_mask)

    # --- keypoints in output coordinates ---------------------------------
    if body is not None:
        mask_arr = np.asarray(occ_mask) if occ_mask is not None else None
        for i in range(17):
            x, y = body.kp[i]
            if not (0 <= x < CW and 0 <= y < CH):
                continue  # outside the image -> v = 0, x = y = 0
            v = int(body.vis[i])
            if mask_arr is not None and mask_arr[int(y), int(x)] > 0:
                v = 1
            keypoints[i] = (x / _SS, y / _SS, v)
        x0, y0, x1, y1 = _person_extent(body)
        x0, y0 = max(0.0, x0 / _SS), max(0.0, y0 / _SS)
        x1, y1 = min(float(W), x1 / _SS), min(float(H), y1 / _SS)
        if x1 > x0 and y1 > y0:
            bbox = (x0, y0, x1 - x0, y1 - y0)

    # --- camera optics & sensor ------------------------------------------
    img = canvas.reduce(_SS)
    lu = r_light.uniform(size=4)
    lz = r_light.normal(size=6)
    lowres = camera.lowres
    if kind == "junk":
        lowres = min(lowres, 0.5)
    if lowres < 0.98:
        small = (max(8, int(W * lowres)), max(16, int(H * lowres)))
        img = img.resize(small, Image.BILINEAR).resize((W, H), Image.BILINEAR)
    radius = float(camera.blur + d * 0.5 * lu[0] + (1.5 if kind == "junk" else 0.0))
    if radius > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    gain = camera.gain * np.exp(0.04 * d * lz[:3]).astype(np.float32)
    exposure = camera.exposure * math.exp(0.14 * d * lz[3])
    arr = np.power(arr, camera.gamma) * (gain * exposure)
    arr = (arr - 0.5) * camera.contrast + 0.5
    # illumination gradient (shadow / light fall-off) across the crop
    gx = 0.35 * d * np.clip(lz[4], -2, 2) * (np.arange(W, dtype=np.float32) / W - 0.5)
    gy = 0.25 * d * np.clip(lz[5], -2, 2) * (np.arange(H, dtype=np.float32) / H - 0.5)
    arr = arr * (1.0 + gy[:, None, None] + gx[None, :, None])
    arr = arr * 255.0
    if camera.noise > 0:
        arr = arr + r_noise.standard_normal(size=arr.shape, dtype=np.float32) * camera.noise
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    keypoints = np.round(keypoints, 2)
    return RenderResult(image=out, keypoints=keypoints,
                        bbox=tuple(round(float(b), 2) for b in bbox),  # type: ignore
                        view=view, occluded=occluded, silhouette=sil)
