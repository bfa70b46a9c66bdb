"""A small Sphinx extension for the meanfield documentation.

Directives
----------
``scheme-table``
    A table of :data:`meanfield.SCHEMES` generated from the registry at build time (name, state,
    continuous or layer-only, parameters, normalized q/k/v, description, reference), so the page can
    never disagree with the code on those columns.
``meanfield-api-rest`` (reStructuredText only: use it inside an ``{eval-rst}`` block)
    Autodoc entries for every public name of ``meanfield`` (``dir(meanfield)`` without a leading
    underscore, submodules aside) that the current page does not already document with an
    ``auto…``/``py:…`` directive, so a name added to the façade appears in the API reference without
    editing the page.  Names listed in the ``meanfield_autodoc_skip`` configuration value (conf.py)
    are not rendered; they are listed with the reason instead.
"""
from __future__ import annotations

import re
import types
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

_DOCUMENTED = re.compile(
    r"(?:\.\.\s+|\{)(?:py:)?(?:auto)?(?:function|class|data|exception|attribute|method)(?:::|\})\s*"
    r"(?:meanfield\.)?([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def _cell(text: str, literal: bool = False):
    entry = nodes.entry()
    para = nodes.paragraph()
    para += nodes.literal(text, text) if literal else nodes.Text(text)
    entry += para
    return entry


def _table(header, rows, widths):
    table = nodes.table(classes=["longtable"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    head = nodes.thead()
    row = nodes.row()
    for h in header:
        row += _cell(h)
    head += row
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for i, c in enumerate(cells):
            row += _cell(c, literal=(i == 0))
        body += row
    group += body
    return table


class SchemeTable(SphinxDirective):
    """The scheme registry as a table (see the module docstring)."""

    has_content = False

    def run(self):
        from meanfield import SCHEMES

        rows = []
        for name, s in SCHEMES.items():
            params = ", ".join(p for p, used in (("α (alpha)", s.uses_alpha), ("τ (tau)", s.uses_tau)) if used)
            rows.append([name,
                         "sphere × radius" if s.has_radius else "sphere",
                         "ODE and layer map" if s.continuous else "layer map only",
                         params or "—",
                         "yes" if s.normalize_qkv else "no",
                         s.description,
                         s.reference])
        header = ["name", "state", "time", "parameters", "normalized q, k, v", "description (registry)",
                  "reference (registry)"]
        return [_table(header, rows, [10, 10, 10, 8, 6, 36, 20])]


class ApiRest(SphinxDirective):
    """Autodoc entries for the public names of meanfield that the page does not document itself."""

    has_content = False

    def run(self):
        import meanfield

        source = Path(self.env.doc2path(self.env.docname)).read_text(encoding="utf-8")
        documented = set(_DOCUMENTED.findall(source))
        skip = dict(self.config.meanfield_autodoc_skip)
        public = [n for n in sorted(dir(meanfield)) if not n.startswith("_")
                  and not isinstance(getattr(meanfield, n), types.ModuleType)]
        self.env.note_dependency(meanfield.__file__)
        lines = []
        for name in public:
            if name in documented or name in skip:
                continue
            obj = getattr(meanfield, name)
            if isinstance(obj, type):
                kind = "exception" if issubclass(obj, BaseException) else "class"
                lines += [f".. auto{kind}:: meanfield.{name}", "   :members:", ""]
            elif callable(obj):
                lines += [f".. autofunction:: meanfield.{name}", ""]
            else:
                lines += [f".. autodata:: meanfield.{name}", "   :no-value:", ""]
        out = []
        if lines:
            container = nodes.container()
            self.state.nested_parse(StringList(lines, source="meanfield-api-rest"), self.content_offset, container)
            out += container.children
        else:
            para = nodes.paragraph()
            para += nodes.Text("Every public name is documented in the sections above.")
            out.append(para)
        skipped = [n for n in public if n in skip]
        if skipped:
            intro = nodes.paragraph()
            intro += nodes.Text("Public names not rendered here because their docstrings do not build cleanly "
                                "(see ")
            intro += nodes.literal("meanfield_autodoc_skip", "meanfield_autodoc_skip")
            intro += nodes.Text(" in docs/conf.py); use help() on them:")
            out.append(intro)
            items = nodes.bullet_list()
            for n in skipped:
                item = nodes.list_item()
                para = nodes.paragraph()
                para += nodes.literal(f"meanfield.{n}", f"meanfield.{n}")
                para += nodes.Text(f": {skip[n]}")
                item += para
                items += item
            out.append(items)
        return out


def setup(app):
    app.add_config_value("meanfield_autodoc_skip", {}, "env")
    app.add_directive("scheme-table", SchemeTable)
    app.add_directive("meanfield-api-rest", ApiRest)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
