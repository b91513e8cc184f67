"""Plots drawn with PIL alone: line charts with axes, ticks, labels and legends, and scatter
plots. Used for training curves (``curves.png``) and latent maps."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from vaecli.errors import VaeError

Colour = tuple[int, int, int]

BACKGROUND: Colour = (255, 255, 255)
INK: Colour = (0, 0, 0)
GRID: Colour = (225, 225, 225)
#: Distinct colours for series and labels (the "tab10" palette); more labels cycle through
#: hues of :func:`label_colour`.
PALETTE: tuple[Colour, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
TRAIN_COLOUR, TEST_COLOUR = PALETTE[0], PALETTE[1]
FONT_SIZE = 13
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def label_colour(index: int, count: int) -> Colour:
    """The colour of label ``index`` of ``count``: the palette, or evenly spaced hues past ten."""
    if count <= len(PALETTE):
        return PALETTE[index]
    from colorsys import hsv_to_rgb

    r, g, b = hsv_to_rgb(index / count, 0.85, 0.85)
    return (round(r * 255), round(g * 255), round(b * 255))


def _font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) covering
    [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("tick range must be finite")
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    if ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def format_tick(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick step needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step * 10**decimals % 1 > 1e-6:  # steps like 2.5
        decimals += 1
    if max(abs(t) for t in ticks) >= 1e5:
        return f"{value:.3g}"
    return f"{value:.{decimals}f}"


@dataclass
class Series:
    """One line (or set of points) in a chart, with its legend name and colour."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: Colour


class Panel:
    """A chart in a box of a PIL image: axes with ticks and grid, labels, title, data, legend."""

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 62, 14, 28, 44

    def __init__(
        self,
        draw: ImageDraw.ImageDraw,
        box: tuple[int, int, int, int],
        xs: Sequence[float],
        ys: Sequence[float],
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        integer_x: bool = False,
        margin_right: int = MARGIN_RIGHT,
    ) -> None:
        self.draw, self.font = draw, _font()
        left, top, right, bottom = box
        self.area = (
            left + self.MARGIN_LEFT,
            top + self.MARGIN_TOP,
            right - margin_right,
            bottom - self.MARGIN_BOTTOM,
        )
        finite_x = [float(x) for x in xs if math.isfinite(x)] or [0.0, 1.0]
        finite_y = [float(y) for y in ys if math.isfinite(y)] or [0.0, 1.0]
        low_x, high_x = min(finite_x), max(finite_x)
        if integer_x:
            count = min(6, int(high_x - low_x) + 1)
            self.xticks = nice_ticks(low_x, high_x, max(count, 2))
            self.xticks = [t for t in self.xticks if t == int(t)] or [low_x]
        else:
            self.xticks = nice_ticks(low_x, high_x)
        low_y, high_y = min(finite_y), max(finite_y)
        pad = (high_y - low_y) * 0.05 or max(abs(low_y) * 0.05, 0.5)
        self.yticks = nice_ticks(low_y - pad, high_y + pad)
        self.x_range = (min(self.xticks[0], low_x), max(self.xticks[-1], high_x))
        if self.x_range[0] == self.x_range[1]:
            self.x_range = (self.x_range[0] - 1, self.x_range[1] + 1)
        self.y_range = (self.yticks[0], self.yticks[-1])
        self._axes(box, title, xlabel, ylabel)

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.area
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    def _text(self, xy: tuple[float, float], text: str, anchor: str) -> None:
        self.draw.text(xy, text, fill=INK, font=self.font, anchor=anchor)

    def _axes(self, box: tuple[int, int, int, int], title: str, xlabel: str, ylabel: str) -> None:
        left, top, right, bottom = self.area
        for tick in self.xticks:
            if self.x_range[0] <= tick <= self.x_range[1]:
                px, _ = self.to_pixel(tick, self.y_range[0])
                self.draw.line([(px, top), (px, bottom)], fill=GRID)
                self.draw.line([(px, bottom), (px, bottom + 4)], fill=INK)
                self._text((px, bottom + 6), format_tick(tick, self.xticks), "mt")
        for tick in self.yticks:
            _, py = self.to_pixel(self.x_range[0], tick)
            self.draw.line([(left, py), (right, py)], fill=GRID)
            self.draw.line([(left - 4, py), (left, py)], fill=INK)
            self._text((left - 6, py), format_tick(tick, self.yticks), "rm")
        self.draw.rectangle([left, top, right, bottom], outline=INK)
        if title:
            self._text(((left + right) / 2, box[1] + 6), title, "mt")
        if xlabel:
            self._text(((left + right) / 2, box[3] - 4), xlabel, "md")
        if ylabel:  # written sideways, left of the tick labels
            width = int(self.draw.textlength(ylabel, font=self.font)) + 4
            label = Image.new("RGB", (width, FONT_SIZE + 6), BACKGROUND)
            ImageDraw.Draw(label).text((2, 2), ylabel, fill=INK, font=self.font)
            rotated = label.rotate(90, expand=True)
            y = int((top + bottom) / 2 - rotated.height / 2)
            self.draw._image.paste(rotated, (box[0] + 2, y))  # type: ignore[attr-defined]

    def line(self, series: Series, markers: bool = True) -> None:
        """The series as a line (cut at the plot area's top and bottom), with a dot at each point
        inside it."""
        points = [self.to_pixel(x, y) for x, y in zip(series.xs, series.ys, strict=True) if math.isfinite(y)]
        _, top, _, bottom = self.area
        inside = [(px, py) for px, py in points if top <= py <= bottom]
        if inside == points and len(points) > 1:
            self.draw.line(points, fill=series.colour, width=2, joint="curve")
        elif len(points) > 1:
            for a, b in zip(points, points[1:], strict=False):
                segment = _clip_segment(a, b, top, bottom)
                if segment:
                    self.draw.line(segment, fill=series.colour, width=2)
        if markers or len(points) == 1:
            for px, py in inside:
                self.draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=series.colour)

    def vline(self, x: float, colour: Colour, dash: int = 5) -> None:
        """A dashed vertical line across the plot area at ``x``."""
        px, _ = self.to_pixel(x, self.y_range[0])
        _, top, _, bottom = self.area
        for y in range(int(top), int(bottom), 2 * dash):
            self.draw.line([(px, y), (px, min(y + dash, bottom))], fill=colour, width=2)

    def ring(self, x: float, y: float, colour: Colour, radius: float = 6.0) -> None:
        """An open circle round the point (x, y): a marked epoch (none off the panel)."""
        if math.isfinite(y) and self.y_range[0] <= y <= self.y_range[1]:
            px, py = self.to_pixel(x, y)
            self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], outline=colour, width=2)

    def scatter(self, series: Series, radius: float = 2.0) -> None:
        for x, y in zip(series.xs, series.ys, strict=True):
            px, py = self.to_pixel(x, y)
            self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=series.colour)

    def legend(
        self,
        entries: Sequence[tuple[str, Colour]],
        outside: bool = False,
        avoid: Sequence[Series] = (),
    ) -> None:
        """A framed key right of the plot area (``outside``), or inside it in whichever corner
        covers the fewest points of the ``avoid`` series (upper right on a tie)."""
        if not entries:
            return
        left, top, right, bottom = self.area
        row = FONT_SIZE + 5
        width = max(int(self.draw.textlength(name, font=self.font)) for name, _ in entries) + 34
        height = row * len(entries) + 6
        if outside:
            x0, y0 = right + 10, top
        else:
            corners = [
                (right - width - 6, top + 6),
                (left + 6, top + 6),
                (right - width - 6, bottom - height - 6),
                (left + 6, bottom - height - 6),
            ]
            points = [p for s in avoid for p in self._path(s)]
            x0, y0 = min(corners, key=lambda c: sum(_inside(p, c, width, height) for p in points))
        self.draw.rectangle([x0, y0, x0 + width, y0 + height], fill=BACKGROUND, outline=INK)
        for i, (name, colour) in enumerate(entries):
            y = y0 + 4 + i * row + row / 2
            self.draw.line([(x0 + 6, y), (x0 + 22, y)], fill=colour, width=3)
            self._text((x0 + 28, y), name, "lm")

    def _path(self, series: Series, per_segment: int = 20) -> list[tuple[float, float]]:
        """Pixel points along a series' line (its markers and points between them)."""
        points = [self.to_pixel(x, y) for x, y in zip(series.xs, series.ys, strict=True) if math.isfinite(y)]
        along = list(points)
        for (xa, ya), (xb, yb) in zip(points, points[1:], strict=False):
            along += [
                (xa + (xb - xa) * k / per_segment, ya + (yb - ya) * k / per_segment)
                for k in range(1, per_segment)
            ]
        return along


def _clip_segment(
    a: tuple[float, float], b: tuple[float, float], top: float, bottom: float
) -> list[tuple[float, float]] | None:
    """The part of the segment a-b between the pixel rows ``top`` and ``bottom``, or None."""
    (xa, ya), (xb, yb) = a, b
    if (ya < top and yb < top) or (ya > bottom and yb > bottom):
        return None

    def cut(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float]:
        y = min(max(y0, top), bottom)
        return (x0 + (x1 - x0) * (y - y0) / (y1 - y0), y) if y != y0 else (x0, y0)

    return [cut(xa, ya, xb, yb), cut(xb, yb, xa, ya)]


def _inside(point: tuple[float, float], corner: tuple[float, float], width: float, height: float) -> bool:
    margin = 4
    return (
        corner[0] - margin <= point[0] <= corner[0] + width + margin
        and corner[1] - margin <= point[1] <= corner[1] + height + margin
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


#: The panels of ``curves.png``: (title, metrics key suffix).
CURVE_PANELS = (
    ("-ELBO (nats)", "neg_elbo"),
    ("reconstruction (nats)", "reconstruction"),
    ("KL (nats)", "kl"),
)
PANEL_SIZE = (360, 280)


#: Curves some objectives add to the -ELBO panel: (legend, metrics key, colour).
OBJECTIVE_CURVES = (
    ("train loss", "train_loss", PALETTE[2]),
    ("test -IW bound", "test_neg_iw_bound", PALETTE[3]),
    ("val -IW bound", "val_neg_iw_bound", PALETTE[3]),
)


KEPT_COLOUR: Colour = (60, 60, 190)  # (not a grey: text antialiasing makes greys)


def curves_png(
    rows: Sequence[dict[str, Any]], objective: str | None = None, kept_epoch: int | None = None
) -> bytes:
    """Training curves: one panel per term (-ELBO, reconstruction, KL), train and test per epoch;
    the -ELBO panel adds the objective's loss where it is not the -ELBO (labelled ``objective``),
    and the test k-sample bound of an iwae run. ``kept_epoch`` (a ``--keep best`` run's) is a
    dashed line on each panel."""
    if not rows:
        raise VaeError("no epochs to plot (metrics.jsonl is empty)")
    width, height = PANEL_SIZE
    image = Image.new("RGB", (width * len(CURVE_PANELS), height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    epochs = [float(r["epoch"]) for r in rows]
    held = held_out_split(rows)
    for i, (title, key) in enumerate(CURVE_PANELS):
        series = []
        for split, colour in (("train", TRAIN_COLOUR), (held, TEST_COLOUR)):
            values = [_number(r.get(f"{split}_{key}")) for r in rows]
            if any(math.isfinite(v) for v in values):
                series.append(Series(split, epochs, values, colour))
        if key == "neg_elbo":
            series += _objective_series(rows, epochs, objective)
        if key == "kl":
            series += _group_series(rows, epochs, held)
        ys = [y for s in series for y in s.ys]
        panel = Panel(draw, (i * width, 0, (i + 1) * width, height), epochs, ys, title, "epoch", "nats",
                      integer_x=True)  # fmt: skip
        for s in series:
            panel.line(s)
        entries = [(s.name, s.colour) for s in series]
        if kept_epoch is not None:
            panel.vline(kept_epoch, KEPT_COLOUR)
            entries.append((f"kept: epoch {kept_epoch}", KEPT_COLOUR))
        panel.legend(entries, avoid=series)
    return _png(image)


def held_out_split(rows: Sequence[dict[str, Any]]) -> str:
    """The held-out split a run's rows report: val where it has one, else test."""
    return "val" if any("val_neg_elbo" in r for r in rows) else "test"


@dataclass
class CurveRun:
    """One run in a comparison: its legend name, epoch rows and the epoch its model file holds."""

    name: str
    rows: Sequence[dict[str, Any]]
    kept_epoch: int | None = None


def comparison_png(runs: Sequence[CurveRun]) -> bytes:
    """Several runs' held-out curves, one colour a run, a panel per term (-ELBO, reconstruction,
    KL); a ring marks the epoch each run's model file holds. The key is right of the panels."""
    if not any(run.rows for run in runs):
        raise VaeError("no epochs to plot (every metrics.jsonl is empty)")
    names = _legend_names(runs)
    colours = [label_colour(i, len(runs)) for i in range(len(runs))]
    key_width = (
        max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=_font())) for n in names) + 60
    )
    width, height = PANEL_SIZE
    image = Image.new("RGB", (width * len(CURVE_PANELS) + key_width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    markers = max(len(run.rows) for run in runs) <= 60  # (dots on every epoch of a long run: a smear)
    for i, (title, key) in enumerate(CURVE_PANELS):
        series = [
            Series(name, [float(r["epoch"]) for r in run.rows],
                   [_number(r.get(f"{held_out_split(run.rows)}_{key}")) for r in run.rows], colour)
            for run, name, colour in zip(runs, names, colours, strict=True)
        ]  # fmt: skip
        last = i == len(CURVE_PANELS) - 1
        box = (i * width, 0, (i + 1) * width + (key_width if last else 0), height)
        margin = key_width + Panel.MARGIN_RIGHT if last else Panel.MARGIN_RIGHT
        panel = Panel(draw, box, [x for s in series for x in s.xs], [y for s in series for y in _settled(s)],
                      f"held-out {title}", "epoch", "nats", integer_x=True, margin_right=margin)  # fmt: skip
        for s, run in zip(series, runs, strict=True):
            panel.line(s, markers=markers)
            if run.kept_epoch is not None and run.kept_epoch in s.xs:
                panel.ring(run.kept_epoch, s.ys[s.xs.index(run.kept_epoch)], s.colour)
        if last:
            panel.legend([(s.name, s.colour) for s in series], outside=True)
    return _png(image)


def _settled(series: Series) -> list[float]:
    """A series' values after its first tenth of epochs (all of a short one's): a comparison's
    y axis spans these, so that the runs' ends are told apart; earlier points run off the panel."""
    if len(series.xs) < 5:
        return list(series.ys)
    start = series.xs[0] + 0.1 * (series.xs[-1] - series.xs[0])
    return [y for x, y in zip(series.xs, series.ys, strict=True) if x >= start]


def _legend_names(runs: Sequence[CurveRun]) -> list[str]:
    """The runs' names without the folders they share, each with its held-out split where the runs
    differ in it (val against test)."""
    paths = [Path(run.name) for run in runs]
    parents = {path.parent for path in paths}
    names = [path.name or run.name for path, run in zip(paths, runs, strict=True)]
    if len(parents) > 1 or len(set(names)) < len(names):
        names = [run.name for run in runs]
    splits = [held_out_split(run.rows) for run in runs]
    if len(set(splits)) > 1:
        names = [f"{name} ({split})" for name, split in zip(names, splits, strict=True)]
    return names


def _objective_series(
    rows: Sequence[dict[str, Any]], epochs: list[float], objective: str | None
) -> list[Series]:
    """The loss where it differs from the -ELBO, and the test k-sample bound where there is one."""
    series = []
    for name, key, colour in OBJECTIVE_CURVES:
        values = [_number(r.get(key)) for r in rows]
        if key == "train_loss":
            if all(v == _number(r.get("train_neg_elbo")) for v, r in zip(values, rows, strict=True)):
                continue  # the loss is the -ELBO: nothing to add
            name = f"train loss: {objective}" if objective else name
        if any(math.isfinite(v) for v in values):
            series.append(Series(name, epochs, values, colour))
    return series


def _group_series(rows: Sequence[dict[str, Any]], epochs: list[float], held: str) -> list[Series]:
    """The held-out KL of each latent group (``test_kl_z1``, ...: a hierarchy's) for the KL panel."""
    prefix = f"{held}_kl_"
    groups = [key[len(prefix) :] for key in rows[-1] if key.startswith(prefix)]
    return [
        Series(f"{held} {group}", epochs, [_number(r.get(prefix + group)) for r in rows], group_colour(index))
        for index, group in enumerate(groups)
    ]  # fmt: skip


def group_colour(index: int) -> Colour:
    """The colour of latent group ``index`` in the KL panel: the palette's after train, test and
    the objective curves' (then hues of their own)."""
    first = 4
    return PALETTE[first + index] if first + index < len(PALETTE) else label_colour(index, 36)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a run folder's ``metrics.jsonl`` (a last line cut short by a crash is dropped)."""
    path = Path(run) / METRICS_FILE if Path(run).is_dir() else Path(run)
    if path.suffix == ".safetensors":  # a run's model or checkpoint: its folder's metrics
        path = path.parent / METRICS_FILE
    if not path.is_file():
        raise VaeError(f"{run} has no {METRICS_FILE} (give a vaecli run folder)")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise VaeError(f"{path} is not a {METRICS_FILE} file (not UTF-8 text)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):
                break
            raise VaeError(f"{path}: line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise VaeError(f"{path}: line {number} is not a metrics row (no integer 'epoch')")
        rows.append(row)
    if not rows:
        raise VaeError(f"{path} holds no epochs yet")
    return rows


MAP_SIZE = (680, 560)
LEGEND_WIDTH = 90  # room right of a map's plot area for its key


def scatter_png(
    points: Sequence[tuple[float, float]],
    labels: Sequence[int] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> bytes:
    """A scatter plot of 2-D points, coloured by integer label with a legend when labels are given."""
    if not points:
        raise VaeError("no points to plot")
    image = Image.new("RGB", MAP_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    margin = Panel.MARGIN_RIGHT if labels is None else LEGEND_WIDTH
    panel = Panel(draw, (0, 0, *MAP_SIZE), xs, ys, title, xlabel, ylabel, margin_right=margin)
    if labels is None:
        panel.scatter(Series("", xs, ys, PALETTE[0]))
        return _png(image)
    classes = sorted(set(int(label) for label in labels))
    colours = {c: label_colour(i, len(classes)) for i, c in enumerate(classes)}
    for x, y, label in zip(xs, ys, labels, strict=True):
        panel.scatter(Series("", [x], [y], colours[int(label)]))
    panel.legend([(str(c), colours[c]) for c in classes], outside=True)
    return _png(image)
