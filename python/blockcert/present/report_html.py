"""The HTML of `blockcert report`: a Jinja2 template with autoescaping, images inlined as base64 PNG.

The file must open anywhere, offline, and show hostile text as text: autoescaping is on for every
template (prompt texts, decoded tokens and verifier lines all go through it), nothing is marked safe
(a base64 data URI has no character to escape), and there is no script and no external resource.
"""

from __future__ import annotations

import base64
import math

from jinja2 import Environment, PackageLoader, StrictUndefined

from blockcert.present.report_view import ReportView

TEMPLATE = "report.html.j2"


def num(x: float | None, fmt: str = ".4g") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, fmt)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def visible(token: str) -> str:
    """A token as it reads in a cell: spaces and line breaks made visible, so no token renders empty."""
    shown = token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")
    return shown if shown else "∅"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("blockcert", "data/templates"),
        autoescape=True,  # every template, whatever its name: prompt text can contain anything
        undefined=StrictUndefined,  # a misspelt field fails the build instead of rendering empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["data_uri"] = data_uri
    env.filters["visible"] = visible
    return env


def render(view: ReportView) -> str:
    return _environment().get_template(TEMPLATE).render(r=view)
