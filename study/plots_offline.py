"""The page template of ``dvc plots show`` that draws its interactive charts with no network.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline (this machine, many
clusters) its charts stay blank with no word. This writes a template holding the three libraries
inline (vl-convert-python's bundle, about 0.9 MB, so it is generated, not committed) to the path
``.dvc/config``'s ``plots.html_template`` names; a chart that fails says so on the page.
``make install`` runs it: ``python -m study.plots_offline``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# DVC fills in {refresh_tag} and {plot_divs}; its CDN <script> tags go into {scripts}, left out here.
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<!-- Written by python -m study.plots_offline: VERSIONS inline, so the charts need no network. -->
<style>
  table { border-spacing: 15px; }
  .plot-error { color: #b00020; font: bold 16px sans-serif; }
</style>
<script>
  function plotError(where, message) {
    if (!document.body) {
      document.addEventListener("DOMContentLoaded", function () { plotError(where, message); });
      return;
    }
    var line = document.createElement("p");
    line.className = "plot-error";
    line.textContent = "Chart not rendered: " + message;
    var target = (typeof where === "string" ? document.querySelector(where) : where) || document.body;
    target.insertBefore(line, target.firstChild);
  }
  window.addEventListener("error", function (e) {  // in a chart's own <script>: said in its place
    var script = document.currentScript;
    plotError(script && script.parentElement !== document.head ? script.parentElement : null, e.message);
  });
  window.addEventListener("unhandledrejection", function (e) { plotError(null, String(e.reason)); });
</script>
<script>
BUNDLE
</script>
<script>
  if (typeof window.vegaEmbed === "function") {
    var embedChart = window.vegaEmbed;
    window.vegaEmbed = function (el, spec, opt) {
      return embedChart(el, spec, opt).catch(function (e) { plotError(el, String(e)); });
    };
  }
</script>
</head>
<body>
<noscript><p class="plot-error">The charts need JavaScript, which is off in this browser.</p></noscript>
{plot_divs}
</body>
</html>
"""

# Inline, "</script" or "<!--" would end or garble the script; DVC replaces its placeholders anywhere.
BREAKERS = ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}")


def template_path(root: Path) -> Path:
    """Where DVC reads the template: ``plots.html_template`` of the repository's DVC config, a relative
    path being relative to ``.dvc/`` (as ``dvc plots show`` resolves it)."""
    from dvc.config import Config

    name = Config(dvc_dir=str(root / ".dvc")).get("plots", {}).get("html_template")
    if not name:
        raise SystemExit(f"error: {root / '.dvc' / 'config'} sets no plots.html_template")
    return root / ".dvc" / name  # an absolute name replaces the folder


def page() -> str:
    """The template, with the newest Vega-Lite 5 the package bundles (DVC writes Vega-Lite v5 specs)."""
    import vl_convert

    vega_lite = max((v for v in vl_convert.get_vegalite_versions() if v.startswith("5.")), key=_numbers)
    bundle = vl_convert.javascript_bundle(vl_version=vega_lite)
    clash = [text for text in BREAKERS if text in bundle.lower()]
    if clash:
        raise SystemExit(f"error: the Vega bundle holds {clash}, which would break the page")
    versions = (
        f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vega_lite}, "
        f"Vega-Embed {vl_convert.get_vega_embed_version()}"
    )
    return PAGE.replace("VERSIONS", versions).replace("BUNDLE", bundle)


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def write_template(root: Path) -> Path:
    """Write the template where the DVC config of the repository at ``root`` points; return its path."""
    path = template_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page(), encoding="utf-8")
    os.replace(partial, path)  # a failed run leaves the old template, not half a page
    return path


if __name__ == "__main__":
    from study.paths import PROJECT_ROOT

    print(f"dvc plots show template (offline charts): {write_template(PROJECT_ROOT)}", file=sys.stderr)
