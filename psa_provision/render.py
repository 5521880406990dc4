"""Templates (psa_provision/data/templates/*.j2, package data) -> file content. The only importer of Jinja2.

StrictUndefined: a missing value is an error naming the template file and line, never an empty
string in a config file. keep_trailing_newline keeps files byte-stable between runs.
"""

from __future__ import annotations

import traceback
from typing import Any

import jinja2

from .errors import RenderError
from .packaged import TEMPLATES_DIR

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("psa_provision", "data/templates"),  # importlib.resources
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # noqa: S701 - config files and scripts, not HTML
)


def _template_line(exc: BaseException) -> tuple[str, int] | None:
    """The innermost traceback frame that belongs to a template file (Jinja rewrites frames so)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno or 0
    return None


def render(template_name: str, **context: Any) -> str:
    """Render data/templates/<template_name> with context; RenderError `file:line: problem` on any failure."""
    try:
        return _env.get_template(template_name).render(**context)
    except jinja2.TemplateNotFound:
        raise RenderError(f"template {template_name} not found in {TEMPLATES_DIR}") from None
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or template_name
        raise RenderError(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        found = _template_line(exc) or (str(TEMPLATES_DIR / template_name), 0)
        raise RenderError(f"{found[0]}:{found[1]}: {exc.message} (a value the template needs is missing)") \
            from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        found = _template_line(exc) or (str(TEMPLATES_DIR / template_name), 0)
        raise RenderError(f"{found[0]}:{found[1]}: {type(exc).__name__}: {exc}") from None


def template_names() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.glob("*.j2"))
