"""Lay out a net's graph (netspec/diagram.py's Graph) and draw it as SVG, or as PNG/PDF with matplotlib,
without Graphviz.

The layout is layered, as Graphviz's `dot` does for nets: a node's rank is one more than its deepest
input's, so every edge points down (TB; or right, up, left for LR, BT, RL). Within a rank, nodes stand
in bands, one per logical device in order of first use, so AlexNet's two columns stay two columns.
A long net would make a picture a few hundred pixels wide and several thousand high, so the ranks are
cut into consecutive chunks placed side by side (TB) or one under the other (LR), as many as bring the
picture closest to a 4:3 page; an edge into a later chunk runs past the chunk's end, through the gap,
and in from the next chunk's start.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

CHAR_W, LINE_H, PAD = 6.6, 14.0, 7.0       # 11 px sans-serif text: average advance, line pitch, padding
RANK_GAP, NODE_GAP, CHUNK_GAP, MARGIN = 22.0, 14.0, 48.0, 16.0
TITLE_H, LEGEND_H, ASPECT = 26.0, 30.0, 4 / 3


@dataclass
class Box:
    node: object              # diagram.Node
    x: float
    y: float
    w: float
    h: float


@dataclass
class Scene:
    width: float
    height: float
    title: str
    boxes: list[Box] = field(default_factory=list)
    paths: list[tuple[list[tuple[float, float]], str]] = field(default_factory=list)   # points, copy label
    legend: list[tuple[str, str]] = field(default_factory=list)                         # device, colour


def _size(node) -> tuple[float, float]:
    w = max(len(line) for line in node.lines) * CHAR_W + 2 * PAD + (14 if node.kind == "blob" else 0)
    return max(w, 50.0), len(node.lines) * LINE_H + 2 * PAD - 4


def _ranks(graph) -> list[list]:
    """Nodes grouped by rank (longest path from a source), each rank ordered by device, then net order."""
    preds: dict[str, list[str]] = {}
    for e in graph.edges:
        preds.setdefault(e.dst, []).append(e.src)
    rank: dict[str, int] = {}
    for n in graph.nodes:         # net order is topological
        rank[n.id] = 1 + max((rank[p] for p in preds.get(n.id, ()) if p in rank), default=-1)
    out: list[list] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for n in graph.nodes:
        out[rank[n.id]].append(n)
    return out


def _chunks(main_len: list[float], cross: float, across: bool) -> list[list[int]]:
    """Consecutive ranks cut into k chunks of about equal length, k bringing width/height nearest ASPECT
    (`across`: chunks stand side by side, as in TB; else one under another, as in LR)."""
    total = sum(main_len) + RANK_GAP * len(main_len)

    def shape(k):
        along, beside = total / k, k * cross + (k - 1) * CHUNK_GAP
        return beside / along if across else along / beside

    k = min(range(1, len(main_len) + 1), key=lambda k: abs(math.log(shape(k) / ASPECT)), default=1)
    out, acc, target = [[]], 0.0, total / k
    for r, length in enumerate(main_len):
        if out[-1] and acc + length / 2 > target * len(out) and len(out) < k:
            out.append([])
        out[-1].append(r)
        acc += length + RANK_GAP
    return out


def layout(graph, rankdir: str = "TB") -> Scene:
    """Positions for every node and a polyline for every edge."""
    vertical = rankdir in ("TB", "BT")
    size = {n.id: _size(n) for n in graph.nodes}
    main_of = (lambda i: size[i][1]) if vertical else (lambda i: size[i][0])
    cross_of = (lambda i: size[i][0]) if vertical else (lambda i: size[i][1])
    ranks = _ranks(graph)
    bands = ([""] if any(not n.device for n in graph.nodes) else []) + list(graph.devices)
    band_len = {b: max((sum(cross_of(n.id) + NODE_GAP for n in r if n.device == b) for r in ranks), default=0)
                for b in bands}
    band_at = dict(zip(bands, _running(band_len[b] for b in bands)))
    cross_len = sum(band_len.values())
    main_len = [max(main_of(n.id) for n in r) for r in ranks]
    chunks = _chunks(main_len, cross_len, vertical)
    chunk_main = max(sum(main_len[r] + RANK_GAP for r in c) for c in chunks)
    pos, chunk_of = {}, {}
    for ci, chunk in enumerate(chunks):
        offset, main = ci * (cross_len + CHUNK_GAP), 0.0
        for r in chunk:
            _place_rank(ranks[r], main + (main_len[r] - 0) / 2, offset, band_at, band_len, cross_len,
                        main_of, cross_of, pos)
            chunk_of.update((n.id, ci) for n in ranks[r])
            main += main_len[r] + RANK_GAP
    flip = rankdir in ("BT", "RL")
    return _scene(graph, rankdir, pos, chunk_of, chunk_main, cross_len, len(chunks), flip, main_of, cross_of)


def _running(lengths):
    at = 0.0
    for length in lengths:
        yield at
        at += length


def _place_rank(nodes, centre, offset, band_at, band_len, cross_len, main_of, cross_of, pos) -> None:
    """(main start, cross start) of each node of one rank: in its device's band, centred there (a rank
    holding only device-less nodes is centred across the whole chunk)."""
    lone = all(not n.device for n in nodes)
    groups: dict[str, list] = {}
    for n in nodes:
        groups.setdefault(n.device, []).append(n)
    for band, members in groups.items():
        width = sum(cross_of(n.id) for n in members) + NODE_GAP * (len(members) - 1)
        start, room = (0.0, cross_len) if lone else (band_at[band], band_len[band])
        at = offset + start + (room - width) / 2
        for n in members:
            pos[n.id] = (centre - main_of(n.id) / 2, at)
            at += cross_of(n.id) + NODE_GAP


def _scene(graph, rankdir, pos, chunk_of, chunk_main, cross_len, n_chunks, flip, main_of, cross_of) -> Scene:
    vertical = rankdir in ("TB", "BT")
    total_cross = n_chunks * cross_len + (n_chunks - 1) * CHUNK_GAP
    top = MARGIN + TITLE_H

    def xy(main, cross):
        main = chunk_main - main if flip else main
        return (MARGIN + cross, top + main + RANK_GAP) if vertical else (MARGIN + main + RANK_GAP, top + cross)

    extent = (total_cross, chunk_main + RANK_GAP) if vertical else (chunk_main + RANK_GAP, total_cross)
    legend_h = LEGEND_H if graph.devices else 0
    scene = Scene(extent[0] + 2 * MARGIN, extent[1] + top + MARGIN + legend_h, graph.name,
                  legend=list(graph.devices.items()))
    for n in graph.nodes:
        m, c = pos[n.id]
        corners = [xy(m, c), xy(m + main_of(n.id), c + cross_of(n.id))]
        x0, x1 = sorted(p[0] for p in corners)
        y0, y1 = sorted(p[1] for p in corners)
        scene.boxes.append(Box(n, x0, y0, x1 - x0, y1 - y0))
    for e in graph.edges:
        scene.paths.append(([xy(*p) for p in _route(e, pos, chunk_of, chunk_main, cross_len, main_of,
                                                    cross_of)], e.label))
    return scene


def _route(e, pos, chunk_of, chunk_main, cross_len, main_of, cross_of) -> list[tuple[float, float]]:
    """The edge's points in (main, cross): straight within a chunk; into a later chunk past the end
    of the source's chunk, along the gap before the target's chunk, and in from its start."""
    (sm, sc), (dm, dc) = pos[e.src], pos[e.dst]
    start, end = (sm + main_of(e.src), sc + cross_of(e.src) / 2), (dm, dc + cross_of(e.dst) / 2)
    if chunk_of[e.src] == chunk_of[e.dst]:
        return [start, end]
    gap = chunk_of[e.dst] * (cross_len + CHUNK_GAP) - CHUNK_GAP / 2
    below, above = chunk_main + RANK_GAP / 2, -RANK_GAP / 2
    return [start, (below, start[1]), (below, gap), (above, gap), (above, end[1]), end]


# ---- SVG --------------------------------------------------------------------------------------------
def _octagon(b: Box) -> list[tuple[float, float]]:
    k = min(8.0, b.h / 3)
    return [(b.x + k, b.y), (b.x + b.w - k, b.y), (b.x + b.w, b.y + k), (b.x + b.w, b.y + b.h - k),
            (b.x + b.w - k, b.y + b.h), (b.x + k, b.y + b.h), (b.x, b.y + b.h - k), (b.x, b.y + k)]


def _frame(b: Box, devices: dict) -> tuple[str, float]:
    return (devices[b.node.device], 2.5) if b.node.device else ("#333333", 1.0)


def _text_rows(b: Box):
    top = b.y + b.h / 2 - (len(b.node.lines) - 1) * LINE_H / 2
    return [(b.x + b.w / 2, top + i * LINE_H, line, i == 0) for i, line in enumerate(b.node.lines)]


def render_svg(scene: Scene) -> bytes:
    devices = dict(scene.legend)
    out = [(f'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{scene.width:.0f}" height="{scene.height:.0f}" viewBox="0 0 {scene.width:.0f} '
            f'{scene.height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="11">'),
           ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker></defs>'),
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="14" font-weight="bold">{escape(scene.title)}</text>']
    for points, label in scene.paths:
        style = 'stroke="#d62728" stroke-width="2" stroke-dasharray="6,3"' if label else 'stroke="#555555"'
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(f'<polyline points="{pts}" fill="none" {style} marker-end="url(#arrow)"/>')
        if label:
            (x0, y0), (x1, y1) = points[-2], points[-1]
            out.append(f'<text x="{(x0 + x1) / 2 + 4:.1f}" y="{(y0 + y1) / 2:.1f}" fill="#d62728" '
                       f'font-size="9">{escape(label)}</text>')
    for b in scene.boxes:
        stroke, width = _frame(b, devices)
        paint = f'fill="{b.node.fill}" stroke="{stroke}" stroke-width="{width}"'
        if b.node.kind == "layer":
            out.append(f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="3" {paint}>'
                       f'<title>{escape(b.node.id)}</title></rect>')
        else:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in _octagon(b))
            out.append(f'<polygon points="{pts}" {paint}><title>{escape(b.node.id)}</title></polygon>')
        for x, y, line, first in _text_rows(b):
            weight = ' font-weight="bold"' if first else ""
            out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle"{weight}>{escape(line)}</text>')
    out += _svg_legend(scene)
    out.append("</svg>\n")
    return "\n".join(out).encode()


def _svg_legend(scene: Scene) -> list[str]:
    out, x, y = [], MARGIN, scene.height - MARGIN - 18
    if scene.legend:
        out.append(f'<text x="{x}" y="{y + 13}">logical devices:</text>')
        x += 100
    for device, colour in scene.legend:
        w = len(device) * CHAR_W + 16
        out.append(f'<rect x="{x}" y="{y}" width="{w:.1f}" height="18" fill="white" stroke="{colour}" '
                   f'stroke-width="2.5"/><text x="{x + w / 2:.1f}" y="{y + 13}" text-anchor="middle">'
                   f'{escape(device)}</text>')
        x += w + 10
    return out


# ---- PNG / PDF through matplotlib (Figure + its own canvas: the user's backend is left alone) --------
def render_matplotlib(scene: Scene, fmt: str, dpi: int = 100) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

    fig = Figure(figsize=(scene.width / dpi, scene.height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, scene.width)
    ax.set_ylim(scene.height, 0)
    ax.set_axis_off()
    pt = 72 / dpi                  # points per pixel
    devices = dict(scene.legend)
    ax.text(MARGIN, MARGIN + 12, scene.title, fontsize=14 * pt, fontweight="bold")
    for points, label in scene.paths:
        colour, style = ("#d62728", "--") if label else ("#555555", "-")
        xs, ys = zip(*points)
        ax.plot(xs, ys, color=colour, linestyle=style, linewidth=(2 if label else 1) * pt * 1.4, zorder=1)
        ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=9,
                                     color=colour, linewidth=0, zorder=1, shrinkA=0, shrinkB=0))
        if label:
            ax.text((xs[-2] + xs[-1]) / 2 + 4, (ys[-2] + ys[-1]) / 2, label, color=colour, fontsize=9 * pt)
    for b in scene.boxes:
        stroke, width = _frame(b, devices)
        kw = {"facecolor": b.node.fill, "edgecolor": stroke, "linewidth": width * pt, "zorder": 2}
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, **kw) if b.node.kind == "layer"
                     else Polygon(_octagon(b), closed=True, **kw))
        for x, y, line, first in _text_rows(b):
            ax.text(x, y, line, ha="center", va="center", fontsize=11 * pt, zorder=3,
                    fontweight="bold" if first else "normal")
    _mpl_legend(ax, scene, pt)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def _mpl_legend(ax, scene: Scene, pt: float) -> None:
    from matplotlib.patches import Rectangle

    x, y = MARGIN, scene.height - MARGIN - 18
    if scene.legend:
        ax.text(x, y + 9, "logical devices:", va="center", fontsize=11 * pt)
        x += 100
    for device, colour in scene.legend:
        w = len(device) * CHAR_W + 16
        ax.add_patch(Rectangle((x, y), w, 18, facecolor="white", edgecolor=colour, linewidth=2.5 * pt))
        ax.text(x + w / 2, y + 9, device, ha="center", va="center", fontsize=11 * pt)
        x += w + 10
