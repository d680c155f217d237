"""Drawing a graph as text: Mermaid and Graphviz DOT, optionally with each
node's status (for ``keel graph show``). Pure string building: no renderer needed.

Edges: a value passed along (solid), order only (dotted), a route's or
approval's label (solid, labelled), an error handler (dashed, "on error").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from keel.graph.model import SKIP, Node

if TYPE_CHECKING:
    from keel.graph.graphdef import GraphDef

_MERMAID_SHAPES = {
    "node": ('["', '"]'),
    "map": ('[["', '"]]'),
    "route": ('{"', '"}'),
    "rule": ('>"', '"]'),
    "approval": ('[/"', '"/]'),
    "child": ('(["', '"])'),  # a stadium: another run
}
_DOT_SHAPES = {
    "node": "box",
    "map": "box3d",
    "route": "diamond",
    "rule": "cds",
    "approval": "parallelogram",
    "child": "component",
}


def _label(node: Node, status: Mapping[str, str] | None) -> str:
    text = node.name if node.kind == "node" else f"{node.name} ({node.kind})"
    if status is not None and node.name in status:
        text += f": {status[node.name]}"
    return text


def _edges(graph: GraphDef) -> list[tuple[str, str, str, str | None]]:
    """(parent, child, style, label): style ``data``, ``order``, ``branch`` or ``error``."""
    out: list[tuple[str, str, str, str | None]] = []
    for node in graph.nodes.values():
        for parent in node.data_parents:
            if parent in graph.nodes:
                out.append((parent, node.name, "data", None))
        for edge in node.after:
            style = "branch" if edge.label is not None else "order"
            out.append((edge.parent, node.name, style, edge.label))
        handler = node.options.on_error
        if handler is not None and handler != SKIP:
            out.append((node.name, handler, "error", "on error"))
    return out


def mermaid(graph: GraphDef, status: Mapping[str, str] | None = None) -> str:
    """A Mermaid ``flowchart TD`` of ``graph``."""
    ids = {name: f"n{i}" for i, name in enumerate(graph.nodes)}
    lines = ["flowchart TD"]
    for name, node in graph.nodes.items():
        opening, closing = _MERMAID_SHAPES[node.kind]
        lines.append(f"    {ids[name]}{opening}{_mermaid_text(_label(node, status))}{closing}")
    for parent, child, style, label in _edges(graph):
        a, b = ids[parent], ids[child]
        if style == "data":
            lines.append(f"    {a} --> {b}")
        elif style == "order":
            lines.append(f"    {a} -.-> {b}")
        elif style == "branch":
            lines.append(f'    {a} -- "{_mermaid_text(label or "")}" --> {b}')
        else:
            lines.append(f'    {a} -. "on error" .-> {b}')
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid's entity codes: a raw quote would end the label.
    for raw, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def dot(graph: GraphDef, status: Mapping[str, str] | None = None) -> str:
    """A Graphviz ``digraph`` of ``graph``."""
    lines = [f"digraph {_dot_text(graph.name)} {{", "    rankdir=TB;"]
    for name, node in graph.nodes.items():
        shape = _DOT_SHAPES[node.kind]
        lines.append(
            f"    {_dot_text(name)} [shape={shape}, label={_dot_text(_label(node, status))}];"
        )
    for parent, child, style, label in _edges(graph):
        attrs: list[str] = []
        if style == "order":
            attrs.append("style=dotted")
        elif style == "error":
            attrs.append("style=dashed")
        if label is not None:
            attrs.append(f"label={_dot_text(label)}")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {_dot_text(parent)} -> {_dot_text(child)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
