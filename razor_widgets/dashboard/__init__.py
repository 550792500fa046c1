"""The dashboard: the explorer on one model, served by Voilà (``razor-widgets dashboard``)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

NOTEBOOK = Path(__file__).with_name("dashboard.ipynb")
DEFAULT_MODEL = "resnet18"
# what the command hands to the notebook's kernel (it inherits the server's environment)
MODEL_ENV, INPUT_SIZE_ENV, WORKDIR_ENV = "RAZOR_WIDGETS_MODEL", "RAZOR_WIDGETS_INPUT_SIZE", "RAZOR_WIDGETS_WORKDIR"


def model_factory(spec: str) -> Callable[[], nn.Module]:
    """A function that builds the model ``spec`` names: a torchvision classification model
    (``resnet18``, random weights) or ``package.module:callable``. Checked now, built later."""
    from ..cli import _build_torchvision, load_model

    if ":" in spec:
        module_name = spec.partition(":")[0]
        if not module_name or importlib.util.find_spec(module_name.split(".")[0]) is None:
            raise SystemExit(f"razor-widgets: cannot import {module_name!r} (MODEL is a torchvision model name "
                             f"or package.module:callable)")
        return lambda: load_model(spec)
    import torchvision

    if spec not in torchvision.models.list_models(module=torchvision.models):
        raise SystemExit(f"razor-widgets: {spec!r} is not a torchvision classification model "
                         f"(or give package.module:callable)")
    return lambda: _build_torchvision(spec)


def voila_command(port: int, ip: str = "127.0.0.1", open_browser: bool = False) -> list[str]:
    """The Voilà command line that serves the dashboard notebook."""
    command = [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={port}", f"--Voila.ip={ip}",
               "--Voila.port_retries=0", "--theme=light"]
    if not open_browser:
        command.append("--no-browser")
    return command


def serve(spec: str = DEFAULT_MODEL, input_size: int = 224, port: int = 8866, ip: str = "127.0.0.1",
          open_browser: bool = False) -> int:
    """Start Voilà on the dashboard notebook for ``spec``, print its URL and run until Ctrl-C."""
    model_factory(spec)  # a bad name fails here, in one line, before a server starts
    if importlib.util.find_spec("voila") is None:
        raise SystemExit('razor-widgets: the dashboard needs Voilà: pip install "razor_widgets[notebooks]"')
    env = dict(os.environ, **{MODEL_ENV: spec, INPUT_SIZE_ENV: str(input_size), WORKDIR_ENV: os.getcwd()})
    command = voila_command(port, ip, open_browser)
    print(f"razor-widgets dashboard: {spec} (input 1x3x{input_size}x{input_size}) at http://{ip}:{port}/ "
          f"(Ctrl-C stops it)", flush=True)
    if os.name == "posix":  # become the server: a signal to this process (Ctrl-C, kill) reaches Voila itself
        os.execve(command[0], command, env)
    server = subprocess.Popen(command, env=env)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        return 0
