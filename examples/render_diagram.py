"""Draw the messaging topology: producers -> exchanges -> queues -> consumers, as SVG, PNG and Mermaid.

    python3 examples/render_diagram.py                       # topology.svg, .png, .mmd from ecommerce_topology.json
    python3 examples/render_diagram.py --output-dir build/diagram
    python3 examples/render_diagram.py --management-url http://guest:guest@localhost:15672 --vhost /

The source is a declared-topology file (default: ecommerce_topology.json, the one amqp_broker.py and amqp_client.py
declare), or, with --management-url, a live broker's management HTTP API (RabbitMQ's; amqpd has none yet): its
exchanges, queues and bindings from /api/definitions, its consumers from /api/consumers (named by their
connection's client-provided name from /api/connections). The management API does not know who publishes, so
producers are then taken from the topology file, for the exchanges that exist.

Columns run left to right (producers, exchanges, queues, consumers) in rounded boxes coloured by kind; arrows are
labelled with the routing keys published and the binding keys; dashed red arrows are dead-lettering (a queue's
x-dead-letter-exchange), including a retry queue whose TTL sends messages back.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from topology import TOPOLOGY_FILE, Binding, Consumer, Topology, load_topology

# ------------------------------------------------------------------------------------------------ sources


def read_management_topology(
    management_url: str, vhost: str = "/", producers_from: Topology | None = None, timeout: float = 10.0
) -> Topology:
    """The topology of `vhost` as a RabbitMQ management API reports it.

    `management_url` is the API's base, e.g. ``http://guest:guest@localhost:15672`` (credentials in the URL, else
    guest/guest). Reads ``GET /api/definitions`` (exchanges, queues, bindings), ``GET /api/consumers/{vhost}``
    (``queue.name``, ``prefetch_count``, ``channel_details.connection_name``) and ``GET /api/connections`` (each
    connection's ``user_provided_name`` or ``client_properties.connection_name``, to name consumers by service
    rather than by address). Producers are not in the API: those of `producers_from` whose exchange exists are kept.
    """
    parts = urllib.parse.urlsplit(management_url)
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    netloc = parts.hostname or "localhost"
    if parts.port:
        netloc += f":{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def get(path: str) -> Any:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    quoted_vhost = urllib.parse.quote(vhost, safe="")
    definitions = get("/api/definitions")
    connections = get("/api/connections")
    consumers_doc = get(f"/api/consumers/{quoted_vhost}")
    service_of = {
        c.get("name"): c.get("user_provided_name") or (c.get("client_properties") or {}).get("connection_name")
        for c in connections
    }
    consumers: list[Consumer] = []
    seen: set[tuple[str, str]] = set()
    for item in consumers_doc:
        queue = (item.get("queue") or {}).get("name", "")
        connection = (item.get("channel_details") or {}).get("connection_name")
        name = service_of.get(connection) or item.get("consumer_tag") or "consumer"
        if (name, queue) in seen:
            continue
        seen.add((name, queue))
        consumers.append(Consumer(name, queue, item.get("prefetch_count") or None, bool(item.get("ack_required"))))
    topology = Topology.from_definitions(definitions, vhost)
    exchanges = {x.name for x in topology.exchanges}
    producers = [p for p in (producers_from.producers if producers_from else []) if p.exchange in exchanges]
    return Topology(
        topology.exchanges,
        topology.queues,
        topology.bindings,
        producers,
        consumers,
        f"read from the management API at {base}, vhost {vhost}",
    )


# ------------------------------------------------------------------------------------------------ layout

T = TypeVar("T")

KINDS = ("producer", "exchange", "queue", "consumer")
COLUMN_TITLES = {"producer": "PRODUCERS", "exchange": "EXCHANGES", "queue": "QUEUES", "consumer": "CONSUMERS"}
# kind -> (fill, edge, text): light fills with a darker edge and title in the same hue.
COLOURS = {
    "producer": ("#dbeafe", "#2563eb", "#1e3a8a"),
    "exchange": ("#ffedd5", "#ea580c", "#7c2d12"),
    "queue": ("#dcfce7", "#16a34a", "#14532d"),
    "consumer": ("#ede9fe", "#7c3aed", "#4c1d95"),
}
DEAD_LETTER = "#dc2626"
ARROW = "#475569"
ROW = 1.0  # inches between rows
GROUP_GAP = 0.45  # extra inches between groups of queues fed by different exchanges
BOX_HEIGHT = 0.66
COLUMN_GAP = {"producer": 1.9, "exchange": 2.5, "queue": 1.9}  # gap to the next column, room for labels


@dataclass
class Node:
    kind: str
    name: str
    subtitle: str
    x: float = 0.0  # centre
    y: float = 0.0
    width: float = 2.4

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2

    @property
    def top(self) -> float:
        return self.y + BOX_HEIGHT / 2

    @property
    def bottom(self) -> float:
        return self.y - BOX_HEIGHT / 2


@dataclass
class Edge:
    source: str  # node keys
    target: str
    label: str
    kind: str  # publish | binding | consume | dead-letter | ttl-return


@dataclass
class Diagram:
    title: str
    source: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def column(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]


def binding_label(binding: Binding, exchange_type: str) -> str:
    if exchange_type == "fanout":
        return "(all)"
    if exchange_type == "headers":
        args = dict(binding.arguments)
        match = args.pop("x-match", "all")
        return f"x-match={match} " + " ".join(f"{k}={v}" for k, v in args.items())
    return binding.routing_key or '""'


def queue_subtitle(topology: Topology, name: str) -> str:
    queue = topology.queue(name)
    notes = ["durable" if queue.durable else "transient"]
    if queue.auto_delete:
        notes.append("auto-delete")
    if queue.message_ttl_ms is not None:
        notes.append(f"TTL {queue.message_ttl_ms / 1000:g} s")
    if queue.dead_letter_exchange is not None:
        notes.append("dead-letters")
    for arg, label in (("x-max-length", "max {}"), ("x-queue-type", "{}")):
        if arg in queue.arguments:
            notes.append(label.format(queue.arguments[arg]))
    return " · ".join(notes)


def build_diagram(topology: Topology, title: str, source: str) -> Diagram:
    """Nodes and edges of `topology`, placed in four columns with related boxes side by side."""
    diagram = Diagram(title, source)
    exchange_type = {x.name: x.type for x in topology.exchanges}
    queue_names = {q.name for q in topology.queues}

    # Rows: exchanges in the order producers use them, then the rest; queues grouped under the first exchange
    # that binds them; consumers beside their queue; producers beside their exchange.
    exchange_order: list[str] = []
    for p in topology.producers:
        if p.exchange in exchange_type and p.exchange not in exchange_order:
            exchange_order.append(p.exchange)
    exchange_order += [x.name for x in topology.exchanges if x.name not in exchange_order]
    groups: list[list[str]] = []
    placed: set[str] = set()
    for x in exchange_order:
        group = []
        for b in topology.bindings_from(x):
            if b.destination_type == "queue" and b.destination in queue_names and b.destination not in placed:
                group.append(b.destination)
                placed.add(b.destination)
        groups.append(group)
    rest = [q.name for q in topology.queues if q.name not in placed]
    if rest:
        groups.append(rest)

    y = 0.0
    queue_y: dict[str, float] = {}
    for group in groups:
        if not group:
            continue
        for name in group:
            queue_y[name] = y
            y -= ROW
        y -= GROUP_GAP
    for name in [q for group in groups for q in group]:
        diagram.nodes[f"queue:{name}"] = Node("queue", name, queue_subtitle(topology, name), y=queue_y[name])

    # Exchanges: centred on the queues they bind, pushed apart where they would overlap.
    wanted: list[tuple[float, str]] = []
    fallback = y
    for x in exchange_order:
        ys = [queue_y[b.destination] for b in topology.bindings_from(x) if b.destination in queue_y]
        if ys:
            wanted.append(((max(ys) + min(ys)) / 2, x))
        else:
            wanted.append((fallback, x))
            fallback -= ROW
    for name, x_y in spread(wanted):
        kind = exchange_type[name]
        diagram.nodes[f"exchange:{name}"] = Node("exchange", name, f"{kind} exchange", y=x_y)

    # Producers beside the exchange they publish to; consumers beside their queue.
    producer_wanted = [
        (diagram.nodes[f"exchange:{p.exchange}"].y, p) for p in topology.producers if p.exchange in exchange_type
    ]
    for p, p_y in spread(producer_wanted):
        diagram.nodes.setdefault(f"producer:{p.name}", Node("producer", p.name, p.note or "producer", y=p_y))
    consumer_wanted = [(queue_y[c.queue], c) for c in topology.consumers if c.queue in queue_y]
    for c, c_y in spread(consumer_wanted):
        prefetch = f"prefetch {c.prefetch}" if c.prefetch else "no prefetch limit"
        subtitle = f"{prefetch} · {'manual ack' if c.manual_ack else 'auto-ack'}"
        diagram.nodes.setdefault(f"consumer:{c.name}", Node("consumer", c.name, subtitle, y=c_y))

    # Edges.
    for p in topology.producers:
        if p.exchange in exchange_type:
            diagram.edges.append(
                Edge(f"producer:{p.name}", f"exchange:{p.exchange}", ", ".join(p.routing_keys), "publish")
            )
    labels: dict[tuple[str, str], list[str]] = {}
    for b in topology.bindings:
        kind = "exchange" if b.destination_type == "exchange" else "queue"
        if b.source in exchange_type and f"{kind}:{b.destination}" in diagram.nodes:
            labels.setdefault((f"exchange:{b.source}", f"{kind}:{b.destination}"), []).append(
                binding_label(b, exchange_type[b.source])
            )
    for (source, target), keys in labels.items():
        diagram.edges.append(Edge(source, target, ", ".join(keys), "binding"))
    for q in topology.queues:
        dlx = q.dead_letter_exchange
        if dlx is None:
            continue
        why = "expired" if q.message_ttl_ms is not None else "rejected"
        key = q.dead_letter_routing_key
        if dlx in exchange_type:
            label = f"{why} → key {key}" if key else why
            diagram.edges.append(Edge(f"queue:{q.name}", f"exchange:{dlx}", label, "dead-letter"))
        elif dlx == "" and key in queue_y:  # the default exchange routes by queue name: straight back to a queue
            ttl = f"after TTL {q.message_ttl_ms / 1000:g} s" if q.message_ttl_ms is not None else why
            diagram.edges.append(Edge(f"queue:{q.name}", f"queue:{key}", f"{ttl}: back to {key}", "ttl-return"))
    for c in topology.consumers:
        if c.queue in queue_y:
            diagram.edges.append(Edge(f"queue:{c.queue}", f"consumer:{c.name}", "", "consume"))

    place_columns(diagram)
    return diagram


def spread(wanted: list[tuple[float, T]], gap: float = ROW) -> list[tuple[T, float]]:
    """Items at the y they want, top to bottom, each moved down just enough to stay `gap` below the one above."""
    out: list[tuple[T, float]] = []
    for y, item in sorted(wanted, key=lambda pair: -pair[0]):  # stable: equal wishes keep their order
        out.append((item, min(y, out[-1][1] - gap) if out else y))
    return out


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in inches of `text` drawn at `size` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text:
        return 0.0
    path = TextPath(
        (0, 0), text, size=size, prop=FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    )
    return float(path.get_extents().width) / 72


def place_columns(diagram: Diagram) -> None:
    """Box widths from the longest text in each column; columns side by side with room for the labels."""
    x = 0.5
    for kind in KINDS:
        nodes = diagram.column(kind)
        width = max([2.0] + [max(text_width(n.name, 11, True), text_width(n.subtitle, 8.5)) + 0.5 for n in nodes])
        for n in nodes:
            n.width = width
            n.x = x + width / 2
        x += width + COLUMN_GAP.get(kind, 0)


# ------------------------------------------------------------------------------------------------ drawing


def render_matplotlib(diagram: Diagram, svg_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG: searchable and selectable
    matplotlib.rcParams["font.family"] = "DejaVu Sans"
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    nodes = list(diagram.nodes.values())
    right = max(n.right for n in nodes) + 0.5
    top = max(n.top for n in nodes) + 1.6  # title and column headings
    bottom = min(n.bottom for n in nodes) - 0.9  # legend
    width, height = right, top - bottom
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    fig.patch.set_facecolor("white")

    ax.text(0.5, top - 0.35, diagram.title, fontsize=17, fontweight="bold", color="#0f172a", va="top")
    ax.text(0.5, top - 0.72, diagram.source, fontsize=9.5, color="#64748b", va="top")
    for kind in KINDS:
        column = diagram.column(kind)
        if column:
            ax.text(
                column[0].x,
                max(n.top for n in nodes) + 0.3,
                COLUMN_TITLES[kind],
                ha="center",
                va="bottom",
                fontsize=10,
                fontweight="bold",
                color=COLOURS[kind][1],
            )

    for edge in diagram.edges:
        draw_edge(ax, diagram.nodes[edge.source], diagram.nodes[edge.target], edge, FancyArrowPatch)

    for n in nodes:
        fill, stroke, ink = COLOURS[n.kind]
        box = FancyBboxPatch(
            (n.left, n.bottom),
            n.width,
            BOX_HEIGHT,
            boxstyle="round,pad=0,rounding_size=0.16",
            facecolor=fill,
            edgecolor=stroke,
            linewidth=1.6,
            zorder=3,
        )
        ax.add_patch(box)
        ax.text(n.x, n.y + 0.1, n.name, ha="center", va="center", fontsize=11, fontweight="bold", color=ink, zorder=4)
        ax.text(n.x, n.y - 0.15, n.subtitle, ha="center", va="center", fontsize=8.5, color=stroke, zorder=4)

    legend: list[Artist] = [Patch(facecolor=COLOURS[k][0], edgecolor=COLOURS[k][1], label=k) for k in KINDS]
    legend += [
        Line2D([], [], color=ARROW, lw=1.4, label="publish / binding (key) / consume"),
        Line2D([], [], color=DEAD_LETTER, lw=1.4, ls="--", label="dead-letter / TTL retry"),
    ]
    ax.legend(
        handles=legend,
        loc="lower center",
        ncol=len(legend),
        frameon=False,
        fontsize=9,
        bbox_to_anchor=(0.5, 0.0),
        bbox_transform=ax.transAxes,
        handlelength=1.6,
    )
    fig.savefig(svg_path, format="svg", facecolor="white")
    fig.savefig(png_path, format="png", dpi=150, facecolor="white")
    plt.close(fig)


def draw_edge(ax: Any, a: Node, b: Node, edge: Edge, arrow_class: Any) -> None:
    dashed = edge.kind in ("dead-letter", "ttl-return")
    colour = DEAD_LETTER if dashed else ARROW
    rad = 0.0
    label_at = 0.5
    if edge.kind == "dead-letter":  # back from the queue column to the exchange column, bowed away from the
        down = b.y < a.y  # bindings that leave the middle of the exchange's right edge
        start = (a.left, a.y - 0.2 if down else a.y + 0.2)
        end = (b.right, b.y + 0.2 if down else b.y - 0.2)
        rad = 0.15 if down else -0.15
    elif edge.kind == "ttl-return":  # queue to queue in the same column: a loop out to the right, clear of the
        up = b.y > a.y  # consume arrow that leaves the middle of the target's right edge
        start = (a.right, a.y + (0.12 if up else -0.12))
        end = (b.right, b.y - (0.12 if up else -0.12))
        rad = 0.55 if up else -0.55
    elif a.kind == b.kind:  # exchange-to-exchange binding
        start, end = (a.right, a.y), (b.right, b.y)
        rad = 0.5
    else:
        start, end = (a.right, a.y), (b.left, b.y)
        label_at = 0.62 if edge.kind == "binding" else 0.5
    arrow = arrow_class(
        start,
        end,
        arrowstyle="-|>",
        mutation_scale=13,
        linewidth=1.4,
        color=colour,
        linestyle=(0, (4, 3)) if dashed else "-",
        connectionstyle=f"arc3,rad={rad}",
        shrinkA=0,
        shrinkB=1,
        zorder=2,
    )
    ax.add_patch(arrow)
    if not edge.label:
        return
    # Where the label goes: on the (quadratic Bezier) curve matplotlib's arc3 draws; axes units are inches here.
    (x1, y1), (x2, y2) = start, end
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    t = label_at
    lx = (1 - t) ** 2 * x1 + 2 * (1 - t) * t * cx + t**2 * x2
    ly = (1 - t) ** 2 * y1 + 2 * (1 - t) * t * cy + t**2 * y2
    ha = "left" if edge.kind == "ttl-return" else "center"
    if edge.kind == "ttl-return":
        lx += 0.08
    ax.text(
        lx,
        ly,
        edge.label,
        ha=ha,
        va="center",
        fontsize=8.5,
        color=DEAD_LETTER if dashed else "#334155",
        family="DejaVu Sans Mono",
        zorder=5,
        bbox={
            "boxstyle": "round,pad=0.22,rounding_size=0.12",
            "facecolor": "white",
            "edgecolor": colour if dashed else "#cbd5e1",
            "linewidth": 0.8,
        },
    )


# ------------------------------------------------------------------------------------------------ Mermaid


def mermaid(diagram: Diagram) -> str:
    """The same diagram as a Mermaid flowchart (renders on GitHub, GitLab and mermaid.live)."""
    ids: dict[str, str] = {}
    for n in diagram.nodes.values():
        base = n.kind[0].upper() + "_" + "".join(ch if ch.isalnum() else "_" for ch in n.name)
        ident = base
        while ident in ids.values():
            ident += "_"
        ids[n.key] = ident

    def text(s: str) -> str:
        return s.replace('"', "#quot;")

    shapes = {"producer": ('["', '"]'), "exchange": ('{{"', '"}}'), "queue": ('[("', '")]'), "consumer": ('(["', '"])')}
    lines = ["flowchart LR", f"  %% {diagram.title} ({diagram.source})"]
    for kind in KINDS:
        column = diagram.column(kind)
        if not column:
            continue
        lines.append(f'  subgraph {kind}s["{COLUMN_TITLES[kind].title()}"]')
        lines.append("    direction TB")
        for n in column:
            opening, closing = shapes[kind]
            lines.append(f"    {ids[n.key]}{opening}{text(n.name)}<br/>{text(n.subtitle)}{closing}")
        lines.append("  end")
    for e in diagram.edges:
        arrow = "-.->" if e.kind in ("dead-letter", "ttl-return") else "-->"
        label = f'|"{text(e.label)}"|' if e.label else ""
        lines.append(f"  {ids[e.source]} {arrow}{label} {ids[e.target]}")
    for kind in KINDS:
        fill, stroke, ink = COLOURS[kind]
        lines.append(f"  classDef {kind} fill:{fill},stroke:{stroke},color:{ink},stroke-width:2px")
        members = ",".join(ids[n.key] for n in diagram.column(kind))
        if members:
            lines.append(f"  class {members} {kind}")
    dead = [str(i) for i, e in enumerate(diagram.edges) if e.kind in ("dead-letter", "ttl-return")]
    if dead:
        lines.append(f"  linkStyle {','.join(dead)} stroke:{DEAD_LETTER},color:{DEAD_LETTER}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def write_all(diagram: Diagram, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    svg, png, mmd = out / "topology.svg", out / "topology.png", out / "topology.mmd"
    render_matplotlib(diagram, svg, png)
    mmd.write_text(mermaid(diagram), encoding="utf-8")
    return [svg, png, mmd]


def counts(items: Iterable[object]) -> int:
    return sum(1 for _ in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--topology", type=Path, default=TOPOLOGY_FILE, help="declared-topology file (default: ecommerce_topology.json)"
    )
    parser.add_argument(
        "--management-url",
        help="read the topology from this management HTTP API instead "
        "(RabbitMQ's, e.g. http://guest:guest@localhost:15672)",
    )
    parser.add_argument("--vhost", default="/", help="virtual host to draw (default: /)")
    parser.add_argument("--output-dir", type=Path, default=Path("."), help="where to write (default: .)")
    parser.add_argument("--title", default="E-commerce messaging topology", help="the diagram's title")
    args = parser.parse_args(argv)

    declared = load_topology(args.topology)
    if args.management_url:
        try:
            topology = read_management_topology(args.management_url, args.vhost, producers_from=declared)
        except OSError as exc:
            print(f"render_diagram.py: cannot read {args.management_url}: {exc}", file=sys.stderr)
            return 2
        source = topology.description
    else:
        topology = declared
        source = f"declared in {args.topology.name}, vhost {args.vhost}"
    diagram = build_diagram(topology, args.title, source)
    for path in write_all(diagram, args.output_dir):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(
        f"  {counts(diagram.column('producer'))} producers, {counts(diagram.column('exchange'))} exchanges, "
        f"{counts(diagram.column('queue'))} queues, {counts(diagram.column('consumer'))} consumers, "
        f"{len(diagram.edges)} arrows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
