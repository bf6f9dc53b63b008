"""A "JupyterLab (local)" entry in each lesson page's launch menu, beside Binder.

sphinx-book-theme builds the launch menu from ``launch_buttons`` in ``_config.yml`` but knows no plain local
Jupyter server. This adds one link, ``<local_jupyterlab_url>/lab/tree/<lesson>.ipynb``: it opens the lesson in a
JupyterLab started with ``jupyter lab`` at the root of a checkout (the default port is 8888).
"""
from __future__ import annotations

from pathlib import Path

LAUNCH_GROUP = "launch-buttons"   # the label sphinx-book-theme gives its launch menu
AFTER_THEME = 600                 # html-page-context priority: after the theme (500) has built its menu


def add_local_lab(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Append the local JupyterLab link to the launch menu of a notebook page."""
    options = app.config.html_theme_options.get("launch_buttons", {})
    base = options.get("local_jupyterlab_url", "").rstrip("/")
    if not base or Path(app.env.doc2path(pagename)).suffix != ".ipynb":
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == LAUNCH_GROUP:
            group["buttons"].append({
                "type": "link", "text": "JupyterLab (local)",
                "tooltip": "Open in your own JupyterLab (run `jupyter lab` in the checkout first)",
                "icon": "_static/images/logo_jupyterhub.svg", "url": f"{base}/lab/tree/{pagename}.ipynb",
            })


def setup(app) -> dict:
    """Register the page hook."""
    app.connect("html-page-context", add_local_lab, priority=AFTER_THEME)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
