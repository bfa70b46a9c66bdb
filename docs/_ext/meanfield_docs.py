"""A small Sphinx extension for the meanfield documentation.

Directives
----------
``scheme-table``
    A table of :data:`meanfield.SCHEMES` generated from the registry at build time (name, state,
    continuous or layer-only, parameters, normalized q/k/v, description, reference), so the page can
    never disagree with the code on those columns.
``meanfield-api-rest`` (reStructuredText only: use it inside an ``{eval-rst}`` block)
    Autodoc entries for every public name of ``meanfield`` (``dir(meanfield)`` without a leading
    underscore) that the current page does not already document with an ``auto…``/``py:…``
    directive, so a name added to the façade appears in the API reference without editing the page.
    Public submodules (those in ``meanfield.__all__``, such as ``meanfield.sphere`` and
    ``meanfield.backends``, and those the page documents with ``automodule``) come first, as a list:
    each with a one-line summary and a link to its own entry, which is the page's ``automodule`` when
    it has one; otherwise the directive adds an ``automodule`` with ``:members:`` below the list if
    the submodule has public names, or just a ``py:module`` target if it has none.  The summary is
    the first sentence of the module's docstring, unless the directive's content gives one as a line
    ``NAME: text`` (reStructuredText, e.g. ``backends: The backends behind :data:`BACKENDS`.``).
    Names listed in the ``meanfield_autodoc_skip`` configuration value (conf.py) are not rendered;
    they are listed with the reason instead.
"""
from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

_DOCUMENTED = re.compile(
    r"(?:\.\.\s+|\{)(?:py:)?(?:auto)?(?:function|class|data|exception|attribute|method)(?:::|\})\s*"
    r"(?:meanfield\.)?([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


_MODULE_DOCUMENTED = re.compile(r"\.\.\s+(?:auto|py:)module::\s*meanfield\.([A-Za-z_][A-Za-z0-9_.]*)\s*$",
                                re.MULTILINE)


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph (up to a period followed by a blank), on one line."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    match = re.match(r"(.*?\.)(?:\s|$)", text)
    return match.group(1) if match else text


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

    has_content = True

    def _module_lines(self, meanfield, source: str) -> list:
        """The public submodules of meanfield as a bullet list (summary and link), with a ``py:module`` target
        for each one the page does not document itself."""
        notes = {}
        for line in self.content:
            name, sep, text = line.partition(":")
            if sep and name.strip().isidentifier():
                notes[name.strip()] = text.strip()
            elif line.strip():
                raise self.error(f"meanfield-api-rest: content lines are `NAME: summary`; got {line!r}.")
        on_page = set(_MODULE_DOCUMENTED.findall(source))
        # the submodules in meanfield.__all__ and those the page documents (not dir(meanfield), which also
        # holds the subpackages imported lazily so far, and so would depend on the order of the build)
        listed = {n for n in getattr(meanfield, "__all__", ()) if isinstance(getattr(meanfield, n), types.ModuleType)}
        modules = sorted(n for n in listed | {n for n in on_page if "." not in n} if not n.startswith("_"))
        unknown = sorted(set(notes) - set(modules))
        if unknown:
            raise self.error(f"meanfield-api-rest: {unknown} are not public submodules of meanfield ({modules}).")
        if not modules:
            return []
        lines = ["Public submodules of ``meanfield``:", ""]
        entries = []
        for name in modules:
            module = importlib.import_module(f"meanfield.{name}")
            self.env.note_dependency(module.__file__)
            summary = notes.get(name) or _first_sentence(module.__doc__) or "(no docstring)"
            own = [n for n in dir(module) if not n.startswith("_")
                   and not isinstance(getattr(module, n), types.ModuleType)]
            if name in on_page:
                where = "documented in its own section of this page"
            elif own:           # documented here, below the list
                where = "documented below"
                entries += [f".. automodule:: meanfield.{name}", "   :members:", ""]
            else:               # a link target and an index entry only
                where = "no public names of its own"
                entries += [f".. py:module:: meanfield.{name}", ""]
            lines.append(f"* :mod:`meanfield.{name}`: {summary} ({where})")
        lines.append("")
        if entries:             # the current module is restored after them
            lines += entries + [".. py:currentmodule:: meanfield", ""]
        return lines

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
        if not lines:
            lines = ["Every public name that is not a submodule is documented in the sections above.", ""]
        lines = self._module_lines(meanfield, source) + lines
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="meanfield-api-rest"), self.content_offset, container)
        out = list(container.children)
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
