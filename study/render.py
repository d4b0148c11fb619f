"""Reports as text: a Jinja2 template per report holds the words, the code computes the numbers.

Each wing keeps its templates in its own ``templates/`` folder (package data); tables are pandas
frames rendered by :func:`table` (``DataFrame.to_markdown``: GitHub-flavoured pipe tables).
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.cache
def _environment(package: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,  # a name the code did not pass is an error, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )


def render(package: str, template: str, **context: Any) -> str:
    """``package``'s ``templates/<template>`` filled in with ``context``."""
    return _environment(package).get_template(template).render(**context)


def table(frame: Any, **options: Any) -> str:
    """A pandas frame as a Markdown table, without its index (the frame's columns are the header)."""
    return frame.to_markdown(index=False, **options)
