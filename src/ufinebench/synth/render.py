"""Drawing UFine-Synth pedestrians with PIL: a figure that shows exactly what a view shows.

The figure is laid out on a 128 x 384 design grid and scaled to the requested size. What is
drawn for a view comes from ``describe.visible`` (the same table the captions use), so a chest
logo is drawn only from the front and a backpack's label only from behind. Domains vary the
background scene and clutter, lighting and colour cast, blur, noise, JPEG quality, resolution
and partial occlusion.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from ufinebench.synth.attributes import COLOURS, HAIR_RGB, SKIN_RGB, Record
from ufinebench.synth.describe import visible

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Domain:
    """Imaging conditions of one camera domain."""

    name: str
    sky: tuple[RGB, RGB]  # background gradient top -> bottom
    ground: RGB
    clutter: tuple[RGB, ...]
    light: float  # brightness multiplier
    cast: tuple[float, float, float]  # per-channel colour cast
    blur: tuple[float, float]  # Gaussian blur radius range (at 384 px height)
    noise: float  # Gaussian noise sigma (0-255 scale)
    jpeg: tuple[int, int]  # JPEG quality range
    scale: tuple[float, float]  # down-scale factor range (resolution loss)
    occlusion: float  # probability of a foreground occluder
    saturation: float = 1.0
    scale_prob: float = 1.0  # probability that the resolution loss applies at all


DOMAINS: dict[str, Domain] = {
    # training domains
    "street": Domain("street", ((170, 185, 200), (150, 150, 150)), (118, 118, 122), ((90, 90, 100), (160, 140, 120), (120, 60, 50)),
                     1.0, (1.0, 1.0, 1.0), (0.0, 0.6), 3.0, (85, 95), (0.8, 1.0), 0.15, 1.0, 0.3),
    "campus": Domain("campus", ((180, 205, 225), (120, 150, 110)), (96, 132, 84), ((60, 100, 60), (140, 120, 100), (200, 200, 190)),
                     1.05, (0.97, 1.03, 0.96), (0.0, 0.8), 3.0, (80, 95), (0.75, 1.0), 0.15, 1.0, 0.3),
    "mall": Domain("mall", ((222, 210, 190), (190, 175, 150)), (200, 190, 170), ((230, 220, 200), (120, 90, 70), (80, 110, 150)),
                   0.95, (1.06, 1.0, 0.9), (0.0, 0.6), 2.0, (85, 95), (0.8, 1.0), 0.2, 1.0, 0.3),
    # held-out domains (only in the 3C-style evaluation set)
    "night": Domain("night", ((20, 24, 40), (40, 40, 50)), (36, 36, 42), ((70, 70, 90), (200, 180, 90), (40, 40, 60)),
                    0.62, (0.9, 0.95, 1.18), (0.6, 1.2), 7.0, (60, 75), (0.7, 0.9), 0.2, 0.8),
    "cctv": Domain("cctv", ((150, 150, 150), (120, 120, 120)), (105, 105, 105), ((90, 90, 90), (130, 130, 130), (70, 70, 70)),
                   1.0, (1.0, 1.0, 1.0), (0.4, 1.0), 6.0, (45, 60), (0.35, 0.5), 0.25, 0.35),
    "rain": Domain("rain", ((120, 128, 140), (90, 95, 100)), (70, 75, 82), ((60, 66, 75), (100, 110, 120), (140, 60, 40)),
                   0.85, (0.95, 1.0, 1.06), (0.5, 1.2), 4.0, (65, 85), (0.6, 0.85), 0.2, 0.7),
}
TRAIN_DOMAINS = ("street", "campus", "mall")
HELD_OUT_DOMAINS = ("night", "cctv", "rain")

_GRID_W, _GRID_H = 128, 384
_FONT = ImageFont.load_default()


def _c(name: str | None, default: RGB = (128, 128, 128)) -> RGB:
    if name is None:
        return default
    if name == "camouflage":
        return (92, 98, 60)
    return COLOURS.get(name, default)


def _shade(c: RGB, f: float) -> RGB:
    return tuple(int(max(0, min(255, v * f))) for v in c)  # type: ignore[return-value]


class _Painter:
    """Draws on the 128 x 384 design grid; ``p`` maps grid coordinates to pixels."""

    def __init__(self, img: Image.Image, dx: float, rng: np.random.Generator, scale: float = 1.0, dy: float = 0.0,
                 font: ImageFont.ImageFont | ImageFont.FreeTypeFont | None = None) -> None:
        self.img = img
        self.d = ImageDraw.Draw(img)
        self.sx = img.width / _GRID_W * scale
        self.sy = img.height / _GRID_H * scale
        self.ox = img.width * (1 - scale) / 2  # a figure of another scale stands centred, feet moved by dy (grid units)
        self.oy = img.height * (1 - scale) + dy * img.height / _GRID_H
        self.dx = dx
        self.rng = rng
        self.font = _FONT if font is None else font

    def p(self, x: float, y: float) -> tuple[float, float]:
        return ((x + self.dx) * self.sx + self.ox, y * self.sy + self.oy)

    def poly(self, pts: list[tuple[float, float]], fill: RGB, outline: RGB | None = None) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=fill, outline=outline)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        (a, b), (c, d) = self.p(x0, y0), self.p(x1, y1)
        self.d.rectangle([min(a, c), min(b, d), max(a, c), max(b, d)], fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        (a, b), (c, d) = self.p(cx - rx, cy - ry), self.p(cx + rx, cy + ry)
        self.d.ellipse([a, b, c, d], fill=fill)

    def line(self, pts: list[tuple[float, float]], fill: RGB, width: float) -> None:
        self.d.line([self.p(x, y) for x, y in pts], fill=fill, width=max(1, int(round(width * self.sx))))

    def text(self, x: float, y: float, s: str, fill: RGB) -> None:
        self.d.text(self.p(x, y), s, fill=fill, font=self.font, anchor="mm")


# --------------------------------------------------------------------------------------------


def _background(img: Image.Image, dom: Domain, rng: np.random.Generator) -> int:
    """Sky/wall gradient, ground, buildings and clutter. Returns the horizon row."""
    w, h = img.size
    top, bottom = np.asarray(dom.sky[0], np.float32), np.asarray(dom.sky[1], np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    rows = top * (1 - t) + bottom * t  # (H, 3)
    horizon = int(h * rng.uniform(0.55, 0.7))
    rows[horizon:] = np.asarray(dom.ground, np.float32)
    img.paste(Image.fromarray(np.repeat(rows.astype(np.uint8)[:, None, :], w, axis=1)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):  # buildings, shop fronts, trees, windows
        c = dom.clutter[int(rng.integers(len(dom.clutter)))]
        x0 = rng.uniform(-0.2, 1.0) * w
        bw = rng.uniform(0.15, 0.6) * w
        y0 = rng.uniform(0.05, 0.5) * h
        d.rectangle([x0, y0, x0 + bw, horizon], fill=_shade(c, rng.uniform(0.8, 1.2)))
        for _ in range(int(rng.integers(0, 4))):
            wx, wy = x0 + rng.uniform(0, bw), rng.uniform(y0, horizon)
            d.rectangle([wx, wy, wx + 0.06 * w, wy + 0.03 * h], fill=_shade(c, 1.4))
    for _ in range(int(rng.integers(0, 3))):  # ground clutter: kerbs, bins, poles
        c = dom.clutter[int(rng.integers(len(dom.clutter)))]
        x = rng.uniform(0, w)
        y_top = rng.uniform(0.3, 0.6) * h
        d.rectangle([x, y_top, x + rng.uniform(0.02, 0.08) * w, max(y_top, horizon + rng.uniform(0, 0.2) * h)], fill=c)
    if dom.name == "rain":
        for _ in range(60):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            d.line([x, y, x - 2, y + 0.03 * h], fill=(170, 175, 185))
    return horizon


TOP_Y, WAIST_Y, HIP_Y, KNEE_Y, ANKLE_Y, FOOT_Y = 78.0, 188.0, 204.0, 268.0, 342.0, 358.0  # body heights on the 128 x 384 canvas


@dataclass(frozen=True)
class _Figure:
    """One figure's record, what its view shows, and its geometry on the 128 x 384 canvas."""

    r: Record
    v: Record  # visible(r, view)
    view: str  # the view drawn: front, back or side (a three-quarter view is drawn as its base turned by ``turn``)
    side: bool
    walking: bool
    cx: float
    bw: float  # build width factor
    half: float  # shoulder half-width
    waist: float
    skin: tuple[int, int, int]
    inner: tuple[int, int, int]
    outer: str | None
    outer_c: tuple[int, int, int]
    lower_c: tuple[int, int, int]
    legs: list[tuple[float, float]]  # (x of hip, x of foot) of the two legs
    leg_w: float
    swing: float = 1.0  # the arms' swing, times the pose's usual one (a camera's moment of the stride)
    turn: int = 0  # three-quarter views: the side of the image the figure is turned to (+1 right, -1 left); 0 otherwise

    @classmethod
    def of(cls, r: Record, view: str, pose: str, tint: dict[str, RGB] | None = None, limbs: tuple[float, float] = (1.0, 1.0),
           facing: int = 1) -> _Figure:
        """``limbs``: the stride and the arms' swing, times the pose's usual ones; ``facing``: the side of
        the image a three-quarter view turns to (+1 right, -1 left)."""
        cx = 64.0
        bw = {"slim": 0.85, "average": 1.0, "heavy": 1.22}[r["build"]]
        base = {"front_quarter": "front", "back_quarter": "back"}.get(view, view)
        turn = facing if base != view else 0
        side = view == "side"
        walking = pose == "walking"
        stride = (10 if walking else 2) * limbs[0]
        if side:
            legs = [(cx - 2, cx - 2 - stride * 1.4), (cx + 2, cx + 2 + stride * 1.4)]
        else:  # a three-quarter figure is narrower, its legs closer, and its stride shows wider
            apart = (6 if turn else 9) * bw
            step = ((7 if turn else 3) if walking else 1) * limbs[0]
            legs = [(cx - apart, cx - apart - step), (cx + apart, cx + apart + step)]
        half, waist = ((17, 15) if side else (22, 18.5) if turn else (27, 22))
        return cls(r, visible(r, view), base, side, walking, cx, bw, half * bw, waist * bw,
                   SKIN_RGB[r["skin"]], (tint or {}).get("upper_color") or _c(r["upper_color"]),
                   r["outer"] if r["outer"] != "none" else None, (tint or {}).get("outer_color") or _c(r["outer_color"]),
                   (tint or {}).get("lower_color") or _c(r["lower_color"]), legs, 8.5 * bw, limbs[1], turn)


@dataclass(frozen=True)
class Shot:
    """How a camera frames one image beyond its domain (UFine-Synth 2, levels above easy).

    ``scale`` and ``dy`` size and place the figure (above 1 the frame crops it; ``dy`` moves its feet
    in grid units), ``feet_hidden`` puts a low barrier in front of the feet (captions of the image then
    say nothing of the shoes: :data:`HIDDEN_BY_BARRIER`), ``bystander`` is another pedestrian behind,
    ``shade`` the person's own shade of their garments' colours (one per identity: one navy is not
    another), and letters are drawn in a font scaled with the figure."""

    scale: float = 1.0
    dy: float = 0.0
    feet_hidden: bool = False
    bystander: Record | None = None
    bystander_view: str = "front"
    bystander_x: float = 0.0
    shade: tuple[float, float, float] = (1.0, 1.0, 1.0)
    limbs: tuple[float, float] = (1.0, 1.0)  # stride and arm swing, times the pose's usual ones
    facing: int = 1  # a three-quarter view's turn: to the image's right (+1) or left (-1)


HIDDEN_BY_BARRIER = ("shoes_type", "shoes_color", "sole_color")


def draw_shot(rng: np.random.Generator, shade: tuple[float, float, float], bystander: Record) -> Shot:
    """A camera's framing of one image: figure scale 0.8-1.05, a low barrier in 12 % of the images,
    a passer-by behind in 30 %, the moment of the stride (stride 0.2-1.5 and arm swing 0-1.8 times the pose's)."""
    scale = float(rng.uniform(0.8, 1.05))
    # above 1 the frame crops: at most a few grid rows above the head, the feet kept in frame
    dy = float(rng.uniform(-8, 8)) if scale <= 1 else float((scale - 1) * _GRID_H * rng.uniform(0.6, 1.0))
    feet_hidden = bool(rng.random() < 0.12)
    behind = bool(rng.random() < 0.3)
    shot = Shot(scale, dy, feet_hidden, bystander if behind else None, ("front", "back", "side")[int(rng.integers(3))],
                float(rng.choice([-1, 1]) * rng.uniform(30, 55)), shade)
    shot = replace(shot, limbs=(float(rng.uniform(0.2, 1.5)), float(rng.uniform(0.0, 1.8))))
    return replace(shot, facing=int(rng.choice([-1, 1])))


def identity_shade(rng: np.random.Generator) -> tuple[float, float, float]:
    """One person's shade of every garment colour: each channel within +-12 %."""
    return tuple(float(x) for x in rng.uniform(0.88, 1.12, size=3))  # type: ignore[return-value]


_SCALED_FONTS: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}


def _scaled_font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The default font at ``px`` pixels (FreeType), or the fixed bitmap font where FreeType is missing."""
    if px not in _SCALED_FONTS:
        try:
            _SCALED_FONTS[px] = ImageFont.load_default(size=px)
        except (ImportError, OSError, TypeError):  # Pillow without FreeType
            _SCALED_FONTS[px] = _FONT
    return _SCALED_FONTS[px]


def _tinted(r: Record, shade: tuple[float, float, float]) -> dict[str, RGB]:
    """The person's garment colours in their own shade."""
    out = {}
    for slot in ("upper_color", "outer_color", "lower_color", "bag_color", "headwear_color", "shoes_color"):
        c = _c(r.get(slot))
        out[slot] = tuple(int(max(0, min(255, v * f))) for v, f in zip(c, shade, strict=True))
    return out  # type: ignore[return-value]


def draw_person(img: Image.Image, r: Record, view: str, pose: str, rng: np.random.Generator, shot: Shot | None = None) -> None:
    """Paint the figure of ``r`` as seen from ``view`` onto ``img``: legs and lower garment, hair
    behind the body, torso and its layers, arms, bag, carried object, head (back to front)."""
    if shot is None:
        P = _Painter(img, dx=rng.uniform(-6, 6), rng=rng)
        f = _Figure.of(r, view, pose)
    else:
        scale = shot.scale
        P = _Painter(img, dx=rng.uniform(-6, 6), rng=rng, scale=scale, dy=shot.dy,
                     font=_scaled_font(max(3, round(11 * img.height / _GRID_H * scale))))
        f = _Figure.of(r, view, pose, _tinted(r, shot.shade), shot.limbs, shot.facing)
    _draw_figure(P, f, rng)


def _draw_figure(P: _Painter, f: _Figure, rng: np.random.Generator) -> None:
    _draw_legs(P, f)
    _draw_back_hair(P, f)
    _draw_torso(P, f)
    _draw_outer(P, f)
    hands = _draw_arms(P, f)
    _draw_bag(P, f, hands, rng)
    _draw_carried(P, f, hands)
    _draw_head(P, f)


def _draw_legs(P: _Painter, f: _Figure) -> None:
    """Legs, the lower garment, shoes and their soles."""
    r, side, cx, waist, skin, lower_c, legs, leg_w = f.r, f.side, f.cx, f.waist, f.skin, f.lower_c, f.legs, f.leg_w
    waist_y, hip_y, knee_y, ankle_y, foot_y = WAIST_Y, HIP_Y, KNEE_Y, ANKLE_Y, FOOT_Y
    # --- legs and lower garment -------------------------------------------------------------
    lt, ll = r["lower_type"], r["lower_length"]
    cover_to = {"ankle-length": ankle_y, "cropped": ankle_y - 22, "knee-length": knee_y, "above-knee": knee_y - 26}[ll]
    for hx, fx in legs:
        def at(y: float, hx: float = hx, fx: float = fx) -> float:  # this leg's centre line at height y
            return hx + (fx - hx) * (y - hip_y) / (ankle_y - hip_y)

        P.poly([(at(hip_y) - leg_w, hip_y), (at(hip_y) + leg_w, hip_y), (at(ankle_y) + leg_w * 0.7, ankle_y),
                (at(ankle_y) - leg_w * 0.7, ankle_y)], skin)
        if lt in ("jeans", "trousers", "shorts"):
            P.poly([(at(hip_y) - leg_w - 1, hip_y - 2), (at(hip_y) + leg_w + 1, hip_y - 2),
                    (at(cover_to) + leg_w * 0.85, cover_to), (at(cover_to) - leg_w * 0.85, cover_to)], lower_c)
            if lt == "jeans":
                P.line([(at(hip_y + 6), hip_y + 6), (at(cover_to - 2), cover_to - 2)], _shade(lower_c, 1.35), 1)
        # shoes with their soles
        sc, sole = _c(r["shoes_color"]), _c(r["sole_color"])
        st = r["shoes_type"]
        toe = (9 if side else 2)
        if st == "boots":
            P.rect(fx - leg_w * 0.8, ankle_y - 20, fx + leg_w * 0.8 + toe, foot_y - 3, sc)
        elif st == "sandals":
            P.rect(fx - leg_w * 0.7, ankle_y, fx + leg_w * 0.7 + toe, foot_y - 3, skin)
            for yy in (ankle_y + 4, ankle_y + 10):
                P.line([(fx - leg_w * 0.7, yy), (fx + leg_w * 0.7 + toe, yy)], sc, 2.5)
        elif st == "leather shoes":
            P.poly([(fx - leg_w * 0.8, ankle_y + 2), (fx + leg_w * 0.8, ankle_y + 2), (fx + leg_w * 0.8 + toe + 3, foot_y - 3),
                    (fx - leg_w * 0.8, foot_y - 3)], sc)
        else:  # sneakers
            P.rect(fx - leg_w * 0.85, ankle_y - 1, fx + leg_w * 0.85 + toe, foot_y - 3, sc)
            P.line([(fx - leg_w * 0.5, ankle_y + 4), (fx + leg_w * 0.5, ankle_y + 4)], _shade(sc, 1.6 if sum(sc) < 300 else 0.7), 1.5)
        P.rect(fx - leg_w * 0.85, foot_y - 4, fx + leg_w * 0.85 + toe, foot_y, sole)
    if lt == "skirt":
        P.poly([(cx - waist, waist_y), (cx + waist, waist_y), (cx + waist * 1.45, cover_to), (cx - waist * 1.45, cover_to)], lower_c)
    else:  # seat of the trousers/shorts
        P.poly([(cx - waist, waist_y), (cx + waist, waist_y), (cx + waist + 2, hip_y + 10), (cx - waist - 2, hip_y + 10)], lower_c)


def _draw_back_hair(P: _Painter, f: _Figure) -> None:
    """Long hair hanging behind the body (front view: drawn before the torso covers it)."""
    r, view, cx = f.r, f.view, f.cx
    # --- hair hanging behind the body (front view: drawn first, so the torso covers it) --------
    if view == "front" and r["hair_length"] in ("shoulder-length", "long") and r["hair_style"] not in ("ponytail", "bun"):
        down = 42 if r["hair_length"] == "shoulder-length" else 82
        P.poly([(cx - 17, 44), (cx + 17, 44), (cx + 19, 50 + down), (cx - 19, 50 + down)], HAIR_RGB[r["hair_color"]])


def _draw_torso(P: _Painter, f: _Figure) -> None:
    """The inner top with its pattern, hood, buttons, logo, and the belt."""
    r, v, view, cx, half, waist, inner, outer = f.r, f.v, f.view, f.cx, f.half, f.waist, f.inner, f.outer
    top_y, waist_y = TOP_Y, WAIST_Y
    mid = cx + 6 * f.turn  # the front's centre line: turned towards the side the figure faces
    # --- torso ------------------------------------------------------------------------------
    torso = [(cx - half, top_y + 4), (cx + half, top_y + 4), (cx + waist + 1, waist_y + 2), (cx - waist - 1, waist_y + 2)]
    P.poly(torso, inner)
    pat = v.get("upper_pattern")
    if "upper_type" in v and pat and pat != "logo":
        pc = _c(v["pattern_color"])
        if pat == "horizontal stripes":
            for y in np.arange(top_y + 16, waist_y, 13):
                P.line([(cx - half + 3, y), (cx + half - 3, y)], pc, 3)
        elif pat == "vertical stripes":
            for x in np.arange(cx - half + 6, cx + half - 3, 9):
                P.line([(x, top_y + 8), (x, waist_y)], pc, 2.5)
        elif pat in ("polka-dot", "floral"):
            for row, y in enumerate(np.arange(top_y + 14, waist_y - 4, 14)):
                for x in np.arange(cx - half + 7 + 6 * (row % 2), cx + half - 4, 12):
                    if pat == "polka-dot":
                        P.ellipse(x, y, 2.6, 2.6, pc)
                    else:  # a small flower: four petals round a centre
                        for ddx, ddy in ((-2.2, 0), (2.2, 0), (0, -2.2), (0, 2.2)):
                            P.ellipse(x + ddx, y + ddy, 1.7, 1.7, pc)
                        P.ellipse(x, y, 1.1, 1.1, _shade(pc, 0.6))
        else:  # checked
            for y in np.arange(top_y + 14, waist_y, 12):
                P.line([(cx - half + 3, y), (cx + half - 3, y)], pc, 1.5)
            for x in np.arange(cx - half + 6, cx + half - 3, 10):
                P.line([(x, top_y + 8), (x, waist_y)], pc, 1.5)
    if r["upper_type"] == "hoodie" and view == "back" and not outer:
        P.poly([(cx - 14, top_y + 2), (cx + 14, top_y + 2), (cx + 10, top_y + 30), (cx - 10, top_y + 30)], _shade(inner, 0.85))
    if r["upper_type"] == "cardigan" and view == "front":  # open down the front, buttoned
        P.line([(mid, top_y + 6), (mid, waist_y)], _shade(inner, 0.6), 1.5)
        for y in (top_y + 30, top_y + 55, top_y + 80):
            P.ellipse(mid + 3, y, 1.6, 1.6, _shade(inner, 0.5))
    if r["upper_type"] == "shirt" and view == "front":
        P.poly([(mid - 9, top_y + 4), (mid, top_y + 14), (mid + 9, top_y + 4)], _shade(inner, 0.8))
        for y in (top_y + 30, top_y + 55, top_y + 80):
            P.ellipse(mid, y, 1.4, 1.4, _shade(inner, 0.6))
    if pat == "logo":
        pc = _c(v["pattern_color"])
        if "logo_text" in v:
            P.rect(mid - 12, top_y + 24, mid + 12, top_y + 40, _shade(inner, 0.9))
            P.text(mid, top_y + 32, v["logo_text"], pc)
        else:  # seen at an angle: a foreshortened patch whose letters are strokes, not legible
            P.rect(mid - 7, top_y + 24, mid + 7, top_y + 40, _shade(inner, 0.9))
            for y in (top_y + 29, top_y + 35):
                P.line([(mid - 5, y), (mid + 5, y)], pc, 2)
    if "belt" in v:
        bc = {"black belt": (20, 20, 20), "brown belt": (100, 62, 30)}[v["belt"]]
        P.rect(cx - waist - 1, waist_y - 6, cx + waist + 1, waist_y, bc)
        if view == "front":
            P.rect(mid - 3, waist_y - 7, mid + 3, waist_y + 1, (180, 180, 170))


def _draw_outer(P: _Painter, f: _Figure) -> None:
    """A jacket, vest or coat over the top."""
    view, cx, half, waist, outer, outer_c = f.view, f.cx, f.half, f.waist, f.outer, f.outer_c
    top_y, waist_y, knee_y = TOP_Y, WAIST_Y, KNEE_Y
    if outer:
        bottom = {"jacket": waist_y + 12, "vest": waist_y + 4, "coat": knee_y - 6, "parka": waist_y + 34}[outer]
        flare = 6 if outer == "coat" else (4 if outer == "parka" else 2)
        if outer == "parka":  # a hood lying on the shoulders, seen from every side
            P.ellipse(cx, top_y + 2, half * 0.75, 9, _shade(outer_c, 0.85))
        if view == "front":
            gap, mid = 7, cx + 6 * f.turn  # the opening: turned with the figure in a three-quarter view
            P.poly([(cx - half - 1, top_y + 2), (mid - gap, top_y + 2), (mid - gap, bottom), (cx - waist - flare - 1, bottom)], outer_c)
            P.poly([(mid + gap, top_y + 2), (cx + half + 1, top_y + 2), (cx + waist + flare + 1, bottom), (mid + gap, bottom)], outer_c)
            P.line([(mid - gap, top_y + 2), (mid - gap, bottom)], _shade(outer_c, 0.7), 1)
            P.line([(mid + gap, top_y + 2), (mid + gap, bottom)], _shade(outer_c, 0.7), 1)
        else:
            P.poly([(cx - half - 1, top_y + 2), (cx + half + 1, top_y + 2), (cx + waist + flare + 1, bottom),
                    (cx - waist - flare - 1, bottom)], outer_c)
            if view == "back":
                P.line([(cx, top_y + 10), (cx, bottom)], _shade(outer_c, 0.75), 1)


def _draw_arms(P: _Painter, f: _Figure) -> list[tuple[float, float]]:
    """Arms and sleeves; returns the hands' positions, left of the image first."""
    r, side, walking, cx, bw, half, skin, inner, outer, outer_c = f.r, f.side, f.walking, f.cx, f.bw, f.half, f.skin, f.inner, f.outer, f.outer_c
    top_y = TOP_Y
    # --- arms ---------------------------------------------------------------------------------
    sleeve_c = outer_c if outer in ("jacket", "coat", "parka") else inner
    long_sleeve = outer in ("jacket", "coat", "parka") or r["upper_sleeve"] == "long"
    swing = (7 if walking else 1) * f.swing
    arm_xs = [cx + 3] if side else [cx - half - 4, cx + half + 4]
    hands: list[tuple[float, float]] = []  # in image order: left of image first
    for k, ax in enumerate(arm_xs):
        s = (swing if k == 0 else -swing) if not side else swing
        elbow = (ax + s * 0.4, 140.0)
        wrist = (ax + s, 198.0)
        P.line([(ax, top_y + 8), elbow, wrist], skin, 9 * bw)
        end = wrist if long_sleeve else elbow
        P.line([(ax, top_y + 8), (ax + (end[0] - ax) * 0.5, (top_y + 8 + end[1]) / 2), end], sleeve_c, 10 * bw)
        P.ellipse(wrist[0], wrist[1] + 4, 4.2, 5, skin)
        hands.append((wrist[0], wrist[1] + 6))

    return hands


def _draw_bag(P: _Painter, f: _Figure, hands: list[tuple[float, float]], rng: np.random.Generator) -> None:
    """The bag (backpack, shoulder bag or handbag) with its label."""
    r, v, view, side, cx, half = f.r, f.v, f.view, f.side, f.cx, f.half
    top_y, waist_y, hip_y = TOP_Y, WAIST_Y, HIP_Y
    # --- bag ------------------------------------------------------------------------------------
    if "bag_type" in v:
        bc = _c(r["bag_color"])
        if r["bag_color"] == "camouflage":
            bc = (92, 98, 60)
        bt = r["bag_type"]
        # the person's left is the image's right from the front and the image's left from behind
        left_on_image_right = view == "front"
        s_sign = 1 if ((r["bag_side"] == "left") == left_on_image_right) else -1
        if bt == "backpack":
            if view == "back":
                bx = cx - 4 * f.turn  # a three-quarter view from behind: the pack a little off the turn
                P.rect(bx - half * 0.8, top_y + 14, bx + half * 0.8, waist_y - 8, bc)
                if r["bag_color"] == "camouflage":
                    for _ in range(8):
                        P.ellipse(bx + rng.uniform(-15, 15), rng.uniform(top_y + 20, waist_y - 14), 5, 3, (60, 70, 40))
                if "bag_label_color" in v:
                    P.rect(bx - 11, top_y + 60, bx + 11, top_y + 76, _c(v["bag_label_color"]))
                    P.text(bx, top_y + 68, v["bag_label_text"], (255, 255, 255) if sum(_c(v["bag_label_color"])) < 350 else (0, 0, 0))
            elif view == "front":
                for sx in (-1, 1):
                    P.line([(cx + sx * (half - 8), top_y + 3), (cx + sx * (half - 6), waist_y - 30)], bc, 4)
            else:
                P.rect(cx - half - 16, top_y + 14, cx - half + 2, waist_y - 10, bc)
        elif bt == "shoulder bag":
            bx = cx + s_sign * (half + 2) if not side else cx + 8
            P.line([(cx - s_sign * (half - 6), top_y + 4), (bx, hip_y - 6)], _shade(bc, 0.8), 2.5)
            P.rect(bx - 11, hip_y - 14, bx + 11, hip_y + 10, bc)
            if "bag_label_color" in v:
                P.rect(bx - 7, hip_y - 8, bx + 7, hip_y + 2, _c(v["bag_label_color"]))
                P.text(bx, hip_y - 3, v["bag_label_text"], (0, 0, 0))
        else:  # handbag, hanging from one hand
            bag_hand = 0 if len(hands) == 1 else (1 if s_sign > 0 else 0)
            hx, hy = hands[bag_hand]
            P.rect(hx - 10, hy + 4, hx + 10, hy + 22, bc)
            P.line([(hx - 6, hy + 4), (hx, hy - 2), (hx + 6, hy + 4)], _shade(bc, 0.7), 2)
            if "bag_label_color" in v:
                P.rect(hx - 6, hy + 9, hx + 6, hy + 17, _c(v["bag_label_color"]))
                P.text(hx, hy + 13, v["bag_label_text"], (0, 0, 0))


def _draw_carried(P: _Painter, f: _Figure, hands: list[tuple[float, float]]) -> None:
    """The object in one hand (front and side views)."""
    r, v, view = f.r, f.v, f.view
    # --- carried object (front / side views) -------------------------------------------------
    if "carried" in v:
        hand = len(hands) - 1
        if r["bag_type"] == "handbag" and len(hands) > 1:
            hand = 1 - (1 if ((r["bag_side"] == "left") == (view == "front")) else 0)  # the free hand
        hx, hy = hands[hand]
        obj = v["carried"]
        if obj == "phone":
            P.rect(hx - 3, hy - 8, hx + 3, hy + 2, (25, 25, 30))
        elif obj == "umbrella":
            P.line([(hx, hy - 4), (hx + 2, hy + 70)], (40, 40, 60), 3)
            P.line([(hx, hy - 4), (hx - 4, hy - 8)], (40, 40, 60), 2)
        elif obj == "paper cup":
            P.poly([(hx - 4, hy - 10), (hx + 4, hy - 10), (hx + 3, hy + 2), (hx - 3, hy + 2)], (235, 230, 215))
        else:  # book
            P.rect(hx - 6, hy - 6, hx + 6, hy + 10, (150, 40, 40))


def _draw_head(P: _Painter, f: _Figure) -> None:
    """Neck, head, hair, eyes, headwear and glasses."""
    v, view, side, cx, skin = f.v, f.view, f.side, f.cx, f.skin
    top_y = TOP_Y
    # --- head, hair, headwear, glasses --------------------------------------------------------
    turn = f.turn
    hcx, hcy = cx + (3 if side else 2 * turn), 50.0
    ex = hcx + 3 * turn  # between the eyes: turned towards the side the face looks to
    P.rect(cx - 5, 62, cx + 5, top_y + 6, skin)  # neck
    P.ellipse(hcx, hcy, 12.5 if side else 13, 16, skin)
    if side or (turn and view == "front"):  # the nose in profile (a three-quarter face shows it too)
        nx = hcx + (11 if side else 10 * turn)
        P.poly([(nx, hcy - 2), (nx + (4 if side else 3 * turn), hcy + 4), (nx, hcy + 6)], skin)
    _draw_hair(P, f, hcx, hcy)
    if view == "back" and turn:  # a three-quarter view from behind: a sliver of cheek and an ear
        P.ellipse(hcx + 11 * turn, hcy + 2, 3, 7, skin)
    if view != "back":
        eye = (30, 24, 24)
        if side:
            P.ellipse(hcx + 7, hcy - 1, 1.4, 1.4, eye)
        else:
            P.ellipse(ex - (4 if turn else 5), hcy - 1, 1.5, 1.5, eye)
            P.ellipse(ex + (4 if turn else 5), hcy - 1, 1.5, 1.5, eye)
    if "headwear" in v:
        hwc = _c(v["headwear_color"])
        hw = v["headwear"]
        if hw == "cap":
            P.ellipse(hcx, hcy - 10, 14, 9, hwc)
            P.rect(hcx - 14, hcy - 10, hcx + 14, hcy - 6, hwc)
            if view == "front":
                P.ellipse(hcx, hcy - 6, 12, 3, _shade(hwc, 0.8))
            elif side:
                P.rect(hcx + 6, hcy - 8, hcx + 20, hcy - 5, _shade(hwc, 0.8))
        elif hw == "beanie":
            P.ellipse(hcx, hcy - 11, 14.5, 11, hwc)
            P.rect(hcx - 14.5, hcy - 11, hcx + 14.5, hcy - 5, _shade(hwc, 0.85))
        else:  # hat
            P.rect(hcx - 22, hcy - 11, hcx + 22, hcy - 8, hwc)
            P.rect(hcx - 11, hcy - 26, hcx + 11, hcy - 10, hwc)
    if "glasses" in v:
        gc = (15, 15, 15)
        lens = (20, 20, 25) if v["glasses"] == "sunglasses" else skin
        if side:
            P.ellipse(hcx + 7, hcy - 1, 3.6, 3, gc)
            P.ellipse(hcx + 7, hcy - 1, 2.4, 1.9, lens)
            P.line([(hcx + 4, hcy - 2), (hcx - 6, hcy - 3)], gc, 1)
        else:
            gap = 4 if turn else 5
            for lx in (ex - gap, ex + gap):
                P.ellipse(lx, hcy - 1, 4.2 if not turn else 3.6, 3.3, gc)
                P.ellipse(lx, hcy - 1, 3.0 if not turn else 2.5, 2.2, lens)
            P.line([(ex - 1.5, hcy - 1), (ex + 1.5, hcy - 1)], gc, 1)


def _draw_hair(P: _Painter, f: _Figure, hcx: float, hcy: float) -> None:
    """Hair by length and style, as the view shows it."""
    r, view, side = f.r, f.view, f.side
    hl = r["hair_length"]
    if hl != "bald":
        hc = HAIR_RGB[r["hair_color"]]
        style = r["hair_style"]
        down = {"short": 0, "shoulder-length": 42, "long": 82}[hl]
        if style in ("ponytail", "bun"):
            down = 0
        if view == "back":
            P.ellipse(hcx, hcy - 1, 14, 17, hc)
        else:
            P.poly([(hcx - 14, hcy + 2), (hcx - 12, hcy - 12), (hcx, hcy - 19), (hcx + 12, hcy - 12), (hcx + 14, hcy + 2),
                    (hcx + 10, hcy - 8), (hcx - 10, hcy - 8)], hc)
            if side:
                P.ellipse(hcx - 6, hcy - 2, 8, 14, hc)
        if down and view == "front":  # strands over the shoulders, clear of the chest's centre
            for sgn in (-1, 1):
                P.poly([(hcx + sgn * 10, hcy), (hcx + sgn * 15, hcy - 4), (hcx + sgn * 20, hcy + down),
                        (hcx + sgn * 13, hcy + down)], hc)
        if down and view != "front":  # from behind or the side, hanging hair covers the back
            back_x = hcx - 6 if side else hcx
            P.poly([(back_x - 15, hcy - 6), (back_x + 15 if not side else back_x + 2, hcy - 6),
                    (back_x + 16 if not side else back_x + 3, hcy + down), (back_x - 16, hcy + down)], hc)
        if style == "curly":
            for ang in np.linspace(0, np.pi, 9):
                P.ellipse(hcx - 14 * np.cos(ang), hcy - 8 - 10 * np.sin(ang), 4, 4, _shade(hc, 1.15))
        tied_shows = view != "front" or f.turn  # a three-quarter face shows the tail or bun behind
        behind = -14 if side else (-14 * f.turn if view == "front" else -3 * f.turn)  # where a tail hangs, from the head's centre
        if style == "ponytail" and tied_shows:
            tx = hcx + behind
            P.poly([(tx - 4, hcy - 4), (tx + 4, hcy - 4), (tx + 3, hcy + 40), (tx - 3, hcy + 40)], hc)
        if style == "bun" and tied_shows:
            P.ellipse(hcx + (-12 if side else 0.85 * behind), hcy - 16, 7, 6, _shade(hc, 0.9))


def _occlude(img: Image.Image, dom: Domain, rng: np.random.Generator) -> None:
    """A pole or the edge of a passer-by in front of the person, hiding a narrow strip."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    c = dom.clutter[int(rng.integers(len(dom.clutter)))]
    if rng.random() < 0.5:
        x = rng.uniform(0.05, 0.2) * w if rng.random() < 0.5 else rng.uniform(0.8, 0.95) * w
        d.rectangle([x, 0, x + 0.06 * w, h], fill=_shade(c, 0.7))
    else:
        left = rng.random() < 0.5
        x0, x1 = (-0.2 * w, 0.12 * w) if left else (0.88 * w, 1.2 * w)
        d.ellipse([x0, 0.25 * h, x1, 1.1 * h], fill=_shade(c, 0.5))


_NOISE_BANK: dict[tuple[int, int], np.ndarray] = {}


def _noise_field(h: int, w: int) -> np.ndarray:
    """A fixed (2H, 2W, 3) field of unit Gaussian noise per image size, made once per process.

    Each image takes a window at a random offset drawn from its own generator: deterministic
    per image and far cheaper than drawing fresh noise for every pixel.
    """
    key = (h, w)
    if key not in _NOISE_BANK:
        gen = np.random.default_rng([h, w, 0x5E])
        _NOISE_BANK[key] = gen.standard_normal((2 * h, 2 * w, 3), dtype=np.float32)
    return _NOISE_BANK[key]


def _camera(img: Image.Image, dom: Domain, rng: np.random.Generator) -> Image.Image:
    """Lighting, colour cast, saturation, blur, resolution loss and sensor noise of a domain."""
    w, h = img.size
    blur = rng.uniform(*dom.blur) * h / 384
    if blur > 0.25:
        img = img.filter(ImageFilter.BoxBlur(blur))
    scale = rng.uniform(*dom.scale)
    if rng.random() < dom.scale_prob and scale < 0.98:
        small = img.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.BOX)
        img = small.resize((w, h), Image.Resampling.BILINEAR)
    if dom.saturation != 1.0:
        img = ImageEnhance.Color(img).enhance(dom.saturation)
    gain = dom.light * rng.uniform(0.92, 1.08)
    ramp = np.arange(256, dtype=np.float32)
    lut = np.concatenate([np.minimum(255.0, ramp * (gain * c) + 0.5) for c in dom.cast]).astype(np.int32)
    img = img.point(lut.tolist())
    if dom.noise > 0:
        field = _noise_field(h, w)
        oy, ox = int(rng.integers(0, h)), int(rng.integers(0, w))
        x = np.asarray(img, dtype=np.float32) + dom.noise * field[oy : oy + h, ox : ox + w]
        img = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    return img


def render(r: Record, view: str, pose: str, domain: str, size: tuple[int, int], rng: np.random.Generator,
           shot: Shot | None = None) -> Image.Image:
    """One image (H, W = ``size``) of identity ``r`` seen from ``view`` in ``domain``; ``shot``: the
    camera's framing (UFine-Synth 2), None for the classic fixed framing."""
    h, w = size
    dom = DOMAINS[domain]
    img = Image.new("RGB", (w, h))
    _background(img, dom, rng)
    if shot is not None and shot.bystander is not None:  # a smaller, farther passer-by, half out of frame
        far = Shot(scale=0.62 * shot.scale, dy=-70.0, shade=(0.8, 0.8, 0.8))
        P = _Painter(img, dx=shot.bystander_x, rng=rng, scale=far.scale, dy=far.dy, font=_FONT)
        _draw_figure(P, _Figure.of(shot.bystander, shot.bystander_view, "walking", _tinted(shot.bystander, far.shade)), rng)
    draw_person(img, r, view, pose, rng, shot)
    if shot is not None and shot.feet_hidden:  # a low wall or bench in front of the feet
        c = _shade(dom.clutter[int(rng.integers(len(dom.clutter)))], 0.8)
        ImageDraw.Draw(img).rectangle([0, int(h * 0.86), w, h], fill=c)
    if rng.random() < dom.occlusion:
        _occlude(img, dom, rng)
    return _camera(img, dom, rng)


def jpeg_bytes(img: Image.Image, domain: str, rng: np.random.Generator) -> bytes:
    """The image encoded as JPEG at a quality drawn from the domain's range (deterministic)."""
    lo, hi = DOMAINS[domain].jpeg
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(lo, hi + 1)), optimize=False)
    return buf.getvalue()
