"""Self-contained HTML pages (no scripts, no external resources) from the bundled
Jinja templates, autoescaped: the DSAR pack and the record of processing."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

_environment = Environment(loader=PackageLoader("lifecycle.services", "templates"),
                           autoescape=select_autoescape(["html"]), trim_blocks=True,
                           lstrip_blocks=True)


def _label(text: str) -> str:
    return text.replace("_", " ").replace("-", " ").capitalize()


_environment.filters["label"] = _label


def render(template: str, document: dict[str, Any]) -> str:
    return _environment.get_template(template).render(doc=document)
