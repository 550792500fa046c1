"""Plans and results for the person at the browser: a path box (files on the kernel's machine),
an upload control, and download links for the plan and the exported model.

Downloads are ``<a download>`` anchors inside an ``ipywidgets.HTML``: the bytes travel with the
widget's value over the comm that every front end already has, so the links work the same in
JupyterLab, Notebook and Voilà, with no server route to the kernel's files and no front-end
extension. A small ``onclick`` turns the base64 text into a ``Blob`` URL when clicked, because
browsers cap the length of ``data:`` URLs (a model is tens of MB); small files also carry a
``data:`` URL as their ``href`` so that "save link as" works without script.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import torch

from ..export.recipes import RecipeError, mmrazor_channel_config, torch_pruning_ratios

DATA_URL_LIMIT = 256 * 1024  # bytes: below this a link also carries a plain data: URL
# turns the anchor's base64 payload into a Blob URL before the browser follows the link
# (window.URL: inside an inline handler a bare URL is document.URL, a string)
BLOB_ON_CLICK = ("var s=window.atob(this.dataset.b64),n=s.length,u=new Uint8Array(n);"
                 "for(var k=0;k<n;k++)u[k]=s.charCodeAt(k);"
                 "if(this.dataset.url)window.URL.revokeObjectURL(this.dataset.url);"
                 "this.dataset.url=window.URL.createObjectURL(new window.Blob([u],{type:this.dataset.type}));"
                 "this.href=this.dataset.url;")


UPLOAD_CLASS = "rw-upload"
UPLOAD_STYLE = (f"<style>.{UPLOAD_CLASS}{{font-size:0 !important}}"
                f".{UPLOAD_CLASS}::after{{content:'Upload plan';font-size:var(--jp-widgets-font-size,13px)}}</style>")


@dataclass(frozen=True)
class DownloadFile:
    """One file offered for download: its name, MIME type and bytes."""

    name: str
    mime: str
    data: bytes


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` as bytes."""
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def recipe_files(mutator: Any) -> list[DownloadFile]:
    """The plan as recipes for other tools, as JSON downloads: Torch-Pruning's
    ``pruning_ratio_dict`` by layer name (left out where the plan cannot be said so) and
    MMRazor's channel config."""
    files = []
    try:
        ratios = torch_pruning_ratios(mutator)
    except RecipeError:
        ratios = None
    if ratios is not None:
        files.append(DownloadFile("plan_torch_pruning.json", "application/json",
                                  (json.dumps(ratios, indent=2) + "\n").encode()))
    config = json.dumps(mmrazor_channel_config(mutator), indent=2) + "\n"
    files.append(DownloadFile("plan_mmrazor_config.json", "application/json", config.encode()))
    return files


def _size(n: int) -> str:
    for size, unit in ((1 << 20, "MB"), (1 << 10, "kB")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def download_link(file: DownloadFile) -> str:
    """An anchor that saves ``file`` when clicked (see the module docstring)."""
    b64 = base64.b64encode(file.data).decode("ascii")
    href = f"data:{file.mime};base64,{b64}" if len(file.data) <= DATA_URL_LIMIT else "#"
    return (f"<a class='rw-download' download='{html.escape(file.name, quote=True)}' href='{href}' "
            f"data-type='{file.mime}' data-b64='{b64}' onclick=\"{BLOB_ON_CLICK}\" "
            f"style='margin-right:14px'>&#8595; {html.escape(file.name)} ({_size(len(file.data))})</a>")


class PlanControls:
    """``path`` with ``buttons`` save / load / export, ``upload`` (a ``FileUpload`` of plans) and
    ``downloads`` (the links that ``offer`` puts there; ``clear`` removes them).

    ``actions`` maps ``save``, ``load`` and ``export`` to callables (wrapped by ``clicked`` so
    errors show on the page); an upload calls ``on_upload(name, content)``.
    """

    def __init__(self, actions: dict[str, Callable[[], Any]], on_upload: Callable[[str, bytes], None],
                 clicked: Callable[[Callable[[], Any]], Any]) -> None:
        self.path = widgets.Text(value="plan.json", description="plan", style={"description_width": "40px"},
                                 layout=widgets.Layout(width="240px"),
                                 tooltip="a path on the machine that runs the kernel")
        tips = {"save": "write the plan to the path", "load": "read the plan at the path",
                "export": "export the pruned model (explorer.exported) and offer the plan and the model "
                          "as downloads"}
        labels = {"save": "Save plan", "load": "Load plan", "export": "Export & download"}
        self.buttons: dict[str, widgets.Button] = {}
        for name, label in labels.items():
            button = widgets.Button(description=label, tooltip=tips[name],
                                    layout=widgets.Layout(width="150px" if name == "export" else "100px"))
            button.on_click(clicked(actions[name]))
            self.buttons[name] = button
        # the front end labels a FileUpload "<description> (<number of files>)": "Upload plan (0)" after
        # every upload is reset below; UPLOAD_STYLE hides that text and writes the label itself
        self.upload = widgets.FileUpload(accept=".json,application/json", multiple=False, description="Upload plan",
                                         icon="", tooltip="apply a plan file from this computer",
                                         layout=widgets.Layout(width="130px"))
        self.upload.add_class(UPLOAD_CLASS)
        self._on_upload = on_upload
        self.upload.observe(self._uploaded, "value")
        self.downloads = widgets.HTML()
        self.widget = widgets.VBox([
            widgets.HBox([self.path, self.buttons["save"], self.buttons["load"], self.upload, self.buttons["export"],
                          widgets.HTML(UPLOAD_STYLE)], layout=widgets.Layout(flex_flow="row wrap")),
            self.downloads,
        ])

    def _uploaded(self, change: dict) -> None:
        files = change["new"]
        if not files:  # our own reset below
            return
        file = files[0]
        try:
            self._on_upload(str(file["name"]), bytes(file["content"]))
        finally:
            self.upload.value = ()  # the next upload of the same file is a new event

    def offer(self, files: list[DownloadFile], note: str = "") -> None:
        """Show download links for ``files`` (they stand for the choices of this moment)."""
        links = "".join(download_link(f) for f in files)
        self.downloads.value = f"<div class='rw-downloads'>{links}{html.escape(note)}</div>"

    def clear(self) -> None:
        """Remove the links (a later change makes them stale)."""
        if self.downloads.value:
            self.downloads.value = ""
