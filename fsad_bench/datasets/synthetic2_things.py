"""The five objects of version 2, drawn from signed distances (``synthetic2_shapes``).

Each imitates a kind of part that inspection lines look at: a hex nut (turned metal, lies
at any angle), a populated circuit board (placement tolerances, wrong or missing parts), a
printed capsule (print and cap colour), a cable cross-section (which wire is where), and a
pin header (bent, missing or wrongly plated pins).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fsad_bench.datasets.synthetic2_defects import RGB
from fsad_bench.datasets.synthetic2_objects import (
    Canvas,
    Drawing,
    Layout,
    Place,
    jitter,
    moved,
    relief,
)
from fsad_bench.datasets.synthetic2_shapes import Field, box, circle, cover, polygon, segment

Point = tuple[float, float]


def _local(canvas: Canvas, centre: Point, place: Place) -> tuple[Field, Field]:
    """Canonical coordinates relative to a part's centre, turned with the part."""
    dv = canvas.v - centre[0] - place.dv
    du = canvas.u - centre[1] - place.du
    a = np.deg2rad(place.angle)
    return np.cos(a) * dv + np.sin(a) * du, -np.sin(a) * dv + np.cos(a) * du


def _cover(canvas: Canvas, distance: np.ndarray) -> np.ndarray:
    return cover(distance, round(1 / canvas.px))


def _shade(colour: RGB, light: np.ndarray) -> np.ndarray:
    return np.asarray(colour, np.float32) * light[..., None]


def _pick(rng: np.random.Generator, names: list[str]) -> str:
    return names[int(rng.integers(len(names)))]


def _tone(rng: np.random.Generator, colour: RGB, spread: float) -> RGB:
    return tuple(float(c) for c in np.clip(np.asarray(colour) * rng.normal(1, spread), 0, 1))


class _NoParts:
    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]:
        raise ValueError(f"{type(self).__name__.lower()} has no {kind} defects")


@dataclass(frozen=True)
class Nut(_NoParts):
    """A chamfered hex nut, top view, on a dark belt: it may lie at any angle."""

    background: RGB = (0.17, 0.18, 0.2)
    turn: float = 180.0
    shift: float = 0.05
    metal: RGB = (0.64, 0.65, 0.67)

    def layout(self, rng: np.random.Generator) -> dict[str, Place]:
        return {"nut": Place(colour=_tone(rng, self.metal, 0.04))}

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing:
        v, u = canvas.v, canvas.u
        outline = np.maximum(polygon(v, u, (0, 0), 0.27, 6, 0), circle(v, u, (0, 0), 0.297))
        bore = circle(v, u, (0, 0), 0.115)
        body = np.maximum(outline, -bore)
        r, theta = np.hypot(v, u), np.arctan2(v, u)
        chamfer = relief(canvas, circle(v, u, (0, 0), 0.297), 0.04, 0.35)
        edge = relief(canvas, outline, 0.012, 0.3) * relief(canvas, -bore, 0.01, -0.4)
        thread = np.where(r < 0.145, 0.55 + 0.12 * np.sin(2 * np.pi * r / 0.011 + theta), 1.0)
        light = chamfer * edge * thread * (1 + 0.06 * canvas.grain)
        drawing = Drawing.empty(canvas.size)
        drawing.paint(_cover(canvas, body), _shade(layout["nut"].colour, light), "nut")
        return drawing


_RESISTOR_BANDS = {"r1": ((0.45, 0.25, 0.1), (0.1, 0.1, 0.1), (0.8, 0.15, 0.1)),
                   "r2": ((0.9, 0.8, 0.1), (0.55, 0.2, 0.6), (0.9, 0.5, 0.1))}  # fmt: skip
# Parts, their nominal centres and their own and wrong colours (a wrong value or type).
_PCB_PARTS: dict[str, tuple[tuple[float, float], RGB, tuple[RGB, ...]]] = {
    "ic": ((-0.08, -0.1), (0.09, 0.09, 0.1), ((0.45, 0.45, 0.45), (0.25, 0.18, 0.1))),
    "r1": ((0.2, -0.19), (0.45, 0.25, 0.1), ((0.1, 0.1, 0.1), (0.9, 0.5, 0.1))),
    "r2": ((0.2, 0.0), (0.9, 0.8, 0.1), ((0.8, 0.15, 0.1), (0.2, 0.5, 0.2))),
    "cap": ((0.16, 0.2), (0.16, 0.26, 0.62), ((0.1, 0.1, 0.1), (0.55, 0.35, 0.15))),
    "led": ((-0.18, 0.2), (0.85, 0.14, 0.1), ((0.15, 0.7, 0.2), (0.9, 0.75, 0.15))),
}


@dataclass(frozen=True)
class Board:
    """A small populated circuit board: an IC, two resistors, a capacitor and an LED, each
    placed within pick-and-place tolerance on its pads."""

    background: RGB = (0.55, 0.56, 0.58)
    turn: float = 3.0
    shift: float = 0.04

    def layout(self, rng: np.random.Generator) -> dict[str, Place]:
        return jitter(rng, tuple(_PCB_PARTS), 0.004, 2.0)

    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]:
        name = _pick(rng, list(_PCB_PARTS))
        place, changed = layout[name], dict(layout)
        if kind == "missing":
            changed[name] = replace(place, present=False)
        elif kind == "misplaced" and rng.random() < 0.5:
            changed[name] = moved(place, rng, 0.025, 0.05)
        elif kind == "misplaced":
            changed[name] = replace(
                place, angle=place.angle + rng.choice([-1, 1]) * rng.uniform(20, 90)
            )
        elif kind == "wrong_colour":
            changed[name] = replace(place, colour=_PCB_PARTS[name][2][int(rng.integers(2))])
        else:
            raise ValueError(f"board has no {kind} defects")
        return changed

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing:
        v, u = canvas.v, canvas.u
        drawing = Drawing.empty(canvas.size)
        board = box(v, u, (0, 0), (0.36, 0.4)) - 0.02
        green = _shade(
            (0.11, 0.36, 0.2), relief(canvas, board, 0.01, 0.3) * (1 + 0.04 * canvas.grain)
        )
        drawing.paint(_cover(canvas, board), green)
        for start, end in (((-0.1, -0.3), (-0.1, 0.2)), ((0.2, -0.3), (0.2, 0.3)),
                           ((-0.28, 0.2), (0.16, 0.2)), ((0.0, -0.08), (0.0, 0.2))):  # fmt: skip
            drawing.paint(_cover(canvas, segment(v, u, start, end, 0.007)), (0.16, 0.47, 0.27))
        tin = (0.78, 0.74, 0.6)
        for (cv, cu), half in (((-0.08, -0.1), (0.12, 0.12)), ((0.2, -0.19), (0.035, 0.075)),
                               ((0.2, 0.0), (0.035, 0.075))):  # fmt: skip
            drawing.paint(_cover(canvas, box(v, u, (cv, cu), half)), tin)
        for cv, cu, r in ((0.16, 0.2, 0.078), (-0.18, 0.2, 0.05)):
            drawing.paint(_cover(canvas, circle(v, u, (cv, cu), r)), tin)
        for name, (centre, colour, _) in _PCB_PARTS.items():
            place = layout[name]
            if place.present:
                self._part(drawing, canvas, name, centre, place, place.colour or colour)
        return drawing

    def _part(
        self, drawing: Drawing, canvas: Canvas, name: str, centre: Point, place: Place, colour: RGB
    ) -> None:
        lv, lu = _local(canvas, centre, place)
        _PCB_DRAWERS[name](drawing, canvas, name, lv, lu, colour)


def _ic(drawing: Drawing, canvas: Canvas, name: str, lv: Field, lu: Field, colour: RGB) -> None:
    for side in (-1, 1):
        for row in np.linspace(-0.075, 0.075, 5):
            pin = box(lv, lu, (row, side * 0.105), (0.009, 0.018))
            drawing.paint(_cover(canvas, pin), (0.8, 0.8, 0.82), name)
    body = box(lv, lu, (0.0, 0.0), (0.1, 0.09))
    shade = relief(canvas, body, 0.008, 0.4) * (1 + 0.03 * canvas.grain)
    drawing.paint(_cover(canvas, body), _shade(colour, shade), name)
    dot = circle(lv, lu, (-0.07, -0.06), 0.01)  # pin 1
    drawing.paint(_cover(canvas, dot), (0.3, 0.3, 0.3), name)


def _resistor(
    drawing: Drawing, canvas: Canvas, name: str, lv: Field, lu: Field, colour: RGB
) -> None:
    """A banded resistor; ``colour`` is its first band (the value)."""
    body = box(lv, lu, (0.0, 0.0), (0.026, 0.07))
    light = 0.6 + 0.4 * np.sqrt(np.clip(1 - (lv / 0.027) ** 2, 0, 1))  # a cylinder
    drawing.paint(_cover(canvas, body), _shade((0.8, 0.68, 0.5), light), name)
    bands = (colour, *_RESISTOR_BANDS[name][1:])
    for band, offset in zip(bands, (-0.035, -0.015, 0.005), strict=True):
        stripe = np.maximum(body, np.abs(lu - offset) - 0.006)
        drawing.paint(_cover(canvas, stripe), _shade(band, light), name)
    for end in (-1, 1):
        cap = np.maximum(body, -(end * lu - 0.058))
        drawing.paint(_cover(canvas, cap), _shade((0.82, 0.82, 0.84), light), name)


def _capacitor(
    drawing: Drawing, canvas: Canvas, name: str, lv: Field, lu: Field, colour: RGB
) -> None:
    """An electrolytic capacitor from above: coloured can, polarity stripe, vent cross."""
    can = circle(lv, lu, (0.0, 0.0), 0.07)
    shade = relief(canvas, can, 0.015, 0.45)
    drawing.paint(_cover(canvas, can), _shade(colour, shade), name)
    stripe = np.maximum(can, -(lu - 0.035))
    drawing.paint(_cover(canvas, stripe), _shade((0.85, 0.85, 0.88), shade), name)
    cross = np.minimum(np.abs(lv), np.abs(lu)) - 0.003
    vent = np.maximum(circle(lv, lu, (0.0, 0.0), 0.045), cross)
    drawing.paint(_cover(canvas, vent), (0.6, 0.6, 0.62), name)


def _led(drawing: Drawing, canvas: Canvas, name: str, lv: Field, lu: Field, colour: RGB) -> None:
    dome = circle(lv, lu, (0.0, 0.0), 0.042)
    shine = np.exp(-(((lv + 0.015) ** 2 + (lu + 0.012) ** 2) / 0.012**2))
    glow = _shade(colour, relief(canvas, dome, 0.02, 0.5)) + 0.5 * shine[..., None]
    drawing.paint(_cover(canvas, dome), np.clip(glow, 0, 1), name)


_PCB_DRAWERS = {"ic": _ic, "r1": _resistor, "r2": _resistor, "cap": _capacitor, "led": _led}


_DIGITS = {"2": "111001111100111", "5": "111100111001111", "0": "111101101101111"}


@dataclass(frozen=True)
class Capsule:
    """A two-piece capsule with a dot-printed dose, in a holder (turns a few degrees)."""

    background: RGB = (0.5, 0.52, 0.55)
    turn: float = 4.0
    shift: float = 0.04
    cap: RGB = (0.62, 0.22, 0.14)
    body: RGB = (0.9, 0.86, 0.76)
    text: str = "250"

    def layout(self, rng: np.random.Generator) -> dict[str, Place]:
        places = {"cap": Place(colour=_tone(rng, self.cap, 0.03))}
        common = jitter(rng, ("print",), 0.004, 1.5)["print"]
        for k in range(len(self.text)):
            places[f"print{k}"] = common
        return places

    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]:
        changed = dict(layout)
        glyphs = [name for name in layout if name.startswith("print")]
        if kind == "missing":
            name = _pick(rng, glyphs)
            changed[name] = replace(layout[name], present=False)
        elif kind == "misplaced":  # the print is off register
            shifted = moved(layout[glyphs[0]], rng, 0.015, 0.035)
            changed.update({name: shifted for name in glyphs})
        elif kind == "wrong_colour":
            hue = np.asarray(self.cap) * rng.normal(1, 0.15, 3) * rng.choice([0.8, 1.2])
            changed["cap"] = replace(layout["cap"], colour=tuple(np.clip(hue, 0, 1)))
        else:
            raise ValueError(f"capsule has no {kind} defects")
        return changed

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing:
        v, u = canvas.v, canvas.u
        radius = 0.115
        shell = segment(v, u, (0, -0.24), (0, 0.24), radius)
        across = np.clip(v / radius + 0.25 * canvas.light[0], -1, 1)
        bulge = np.sqrt(1 - across**2)
        shine = 0.22 * np.exp(-(((v + 0.5 * radius) / (0.13 * radius)) ** 2))
        light = (0.55 + 0.45 * bulge) * (1 + 0.02 * canvas.grain)
        drawing = Drawing.empty(canvas.size)
        body = np.clip(_shade(self.body, light) + shine[..., None], 0, 1)
        drawing.paint(_cover(canvas, shell), body, "body")
        cap_light = light * (1 - 0.3 * np.exp(-(((u + 0.005) / 0.006) ** 2)))
        cap = np.clip(_shade(layout["cap"].colour, cap_light) + shine[..., None], 0, 1)
        drawing.paint(_cover(canvas, np.maximum(shell, u + 0.005)), cap, "cap")
        for k, digit in enumerate(self.text):
            place = layout[f"print{k}"]
            if not place.present:
                continue
            lv, lu = _local(canvas, (0.0, 0.08 + 0.07 * (k - 1)), place)
            dots = np.full(lv.shape, np.inf, np.float32)
            for index, on in enumerate(_DIGITS[digit]):
                if on == "1":
                    row, col = divmod(index, 3)
                    dot = circle(lv, lu, (0.018 * (row - 2), 0.018 * (col - 1)), 0.0075)
                    dots = np.minimum(dots, dot)
            drawing.paint(_cover(canvas, dots) * 0.85, (0.12, 0.1, 0.1), f"print{k}")
        return drawing


_WIRES = ((0.33, 0.6, 0.2), (0.2, 0.35, 0.75), (0.45, 0.27, 0.14))
_OTHER_WIRES = ((0.15, 0.15, 0.16), (0.55, 0.55, 0.56), (0.85, 0.8, 0.25))


@dataclass(frozen=True)
class Cable:
    """A cable's cut end: three insulated stranded wires in a sheath, in a fixed order."""

    background: RGB = (0.88, 0.88, 0.86)
    turn: float = 12.0
    shift: float = 0.04

    def layout(self, rng: np.random.Generator) -> dict[str, Place]:
        places = jitter(rng, ("wire0", "wire1", "wire2"), 0.008, 180.0)  # strands lie any way
        return {
            k: replace(p, colour=_tone(rng, c, 0.03))
            for (k, p), c in zip(places.items(), _WIRES, strict=True)
        }

    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]:
        changed = dict(layout)
        names = ["wire0", "wire1", "wire2"]
        if kind == "misplaced":  # two wires swapped
            a, b = rng.choice(3, 2, replace=False)
            changed[names[a]] = replace(layout[names[a]], colour=layout[names[b]].colour)
            changed[names[b]] = replace(layout[names[b]], colour=layout[names[a]].colour)
        elif kind == "missing":
            name = _pick(rng, names)
            changed[name] = replace(layout[name], present=False)
        elif kind == "wrong_colour":
            name = _pick(rng, names)
            colour = _OTHER_WIRES[int(rng.integers(len(_OTHER_WIRES)))]
            changed[name] = replace(layout[name], colour=colour)
        else:
            raise ValueError(f"cable has no {kind} defects")
        return changed

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing:
        v, u = canvas.v, canvas.u
        drawing = Drawing.empty(canvas.size)
        sheath = circle(v, u, (0, 0), 0.42)
        drawing.paint(
            _cover(canvas, sheath), _shade((0.3, 0.33, 0.38), relief(canvas, sheath, 0.03, 0.3))
        )
        filler = circle(v, u, (0, 0), 0.375)
        drawing.paint(_cover(canvas, filler), _shade((0.8, 0.78, 0.74), 1 + 0.05 * canvas.grain))
        for k, name in enumerate(("wire0", "wire1", "wire2")):
            place = layout[name]
            t = np.deg2rad(90 + 120 * k)
            centre = (0.19 * np.sin(t) + place.dv, 0.19 * np.cos(t) + place.du)
            if not place.present:
                hole = circle(v, u, centre, 0.135)
                drawing.paint(
                    _cover(canvas, hole),
                    _shade((0.25, 0.24, 0.22), relief(canvas, hole, 0.02, -0.4)),
                    name,
                )
                continue
            insulation = circle(v, u, centre, 0.135)
            shade = relief(canvas, insulation, 0.02, 0.3) * (1 + 0.03 * canvas.grain)
            drawing.paint(_cover(canvas, insulation), _shade(place.colour, shade), name)
            lv, lu = _local(canvas, centre, Place(angle=place.angle))
            strands = np.full(lv.shape, np.inf, np.float32)
            for sv, su in _strand_centres():
                strands = np.minimum(strands, circle(lv, lu, (sv, su), 0.0185))
            copper = _shade((0.82, 0.52, 0.26), relief(canvas, strands, 0.01, 0.5))
            drawing.paint(_cover(canvas, circle(v, u, centre, 0.09)), (0.2, 0.12, 0.06), name)
            drawing.paint(_cover(canvas, strands), copper, name)
        return drawing


def _strand_centres() -> list[tuple[float, float]]:
    """19 strands: one in the middle, rings of 6 and 12."""
    centres = [(0.0, 0.0)]
    for count, radius in ((6, 0.036), (12, 0.071)):
        for k in range(count):
            t = 2 * np.pi * k / count
            centres.append((radius * np.sin(t), radius * np.cos(t)))
    return centres


_PINS = tuple(f"pin{k}" for k in range(12))


@dataclass(frozen=True)
class Header:
    """A two-row pin header seen from above: gold pins in a black housing."""

    background: RGB = (0.12, 0.3, 0.18)
    turn: float = 4.0
    shift: float = 0.04
    gold: RGB = (0.86, 0.68, 0.3)

    def layout(self, rng: np.random.Generator) -> dict[str, Place]:
        return jitter(rng, _PINS, 0.003, 4.0)

    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]:
        name, changed = _pick(rng, list(_PINS)), dict(layout)
        place = layout[name]
        if kind == "missing":
            changed[name] = replace(place, present=False)
        elif kind == "misplaced":  # bent
            bent = moved(place, rng, 0.015, 0.03)
            changed[name] = replace(
                bent, angle=place.angle + rng.choice([-1, 1]) * rng.uniform(15, 40)
            )
        elif kind == "wrong_colour":  # tin- instead of gold-plated
            changed[name] = replace(place, colour=(0.78, 0.79, 0.8))
        else:
            raise ValueError(f"header has no {kind} defects")
        return changed

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing:
        v, u = canvas.v, canvas.u
        drawing = Drawing.empty(canvas.size)
        housing = box(v, u, (0, 0), (0.15, 0.41)) - 0.01
        shade = relief(canvas, housing, 0.015, 0.4) * (1 + 0.05 * canvas.grain)
        drawing.paint(_cover(canvas, housing), _shade((0.13, 0.13, 0.14), shade))
        for k, name in enumerate(_PINS):
            row, col = divmod(k, 6)
            centre = (-0.07 + 0.14 * row, -0.335 + 0.134 * col)
            socket = box(v, u, centre, (0.035, 0.035))
            drawing.paint(
                _cover(canvas, socket),
                _shade((0.05, 0.05, 0.05), relief(canvas, socket, 0.01, -0.5)),
            )
            place = layout[name]
            if not place.present:
                continue
            lv, lu = _local(canvas, centre, place)
            pin = box(lv, lu, (0.0, 0.0), (0.017, 0.017))
            shine = relief(canvas, pin, 0.012, 0.6)
            drawing.paint(_cover(canvas, pin), _shade(place.colour or self.gold, shine), name)
        return drawing
