"""The report's document written out through the Jinja2 templates beside this module: report.md, and report.html as
one file that opens offline."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from vae_sweep import names
from vae_sweep.analysis.report.document import Bullets, Code, Image, Section, Table

TEMPLATES = Environment(
    loader=PackageLoader(__package__, "templates"),
    # Run names, errors and filter strings are user text: escaped in HTML, written as they are in Markdown.
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=StrictUndefined,
)
TEMPLATES.tests.update(
    image=lambda block: isinstance(block, Image),
    bullets=lambda block: isinstance(block, Bullets),
    table=lambda block: isinstance(block, Table),
    code=lambda block: isinstance(block, Code),
)
# A pipe would end a Markdown table cell and a newline its row.
TEMPLATES.filters["md_cell"] = lambda text: text.replace("|", "\\|").replace("\n", " ")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_markdown(title: str, sections: list[Section]) -> str:
    return TEMPLATES.get_template("report.md.j2").render(title=title, sections=sections)


def to_html(title: str, sections: list[Section], folder: Path) -> str:
    """Every picture inline as a data URI, read from its file under folder."""
    return TEMPLATES.get_template("report.html.j2").render(
        title=title, sections=sections, embed=lambda image: data_uri(folder / image.path)
    )


def write(title: str, sections: list[Section], folder: Path) -> None:
    (folder / names.REPORT_MD).write_text(to_markdown(title, sections), encoding="utf-8")
    (folder / names.REPORT_HTML).write_text(to_html(title, sections, folder), encoding="utf-8")
