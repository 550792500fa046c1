"""The dashboard's Voilà server: what is checked before it starts, and how it is configured.

``serve`` checks Voilà, the port and the model, then becomes ``python -m
razor_widgets.dashboard.server VOILA_ARGS...``, which runs Voilà with idle culling, no xsrf check
(so a closed page ends its kernel) and quiet logs. Why each setting: docs/dashboard.md.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence

from ..model_loading import ModelSource, one_line
from ..trace.example_inputs import ExampleInput, run_model
from . import INPUT_SHAPE_ENV, MODEL_ENV, NOTEBOOK, WORKDIR_ENV, format_shape

WARM_KERNELS = 1  # kernels kept started and traced for the next page (the pool refills after each page)
WS_PING_INTERVAL_MS = 30_000  # jupyter_server's websocket ping interval
WS_PING_TIMEOUT_MS = 3 * WS_PING_INTERVAL_MS  # longer than the interval: see run_voila


def tornado_ping_note(record: logging.LogRecord) -> bool:
    """A logging filter: False for tornado's note that the ping timeout is longer than the
    interval (tornado reads jupyter_server's milliseconds as seconds: see ``run_voila``)."""
    return "cannot be longer than the websocket_ping_interval" not in record.getMessage()


def voila_arguments(port: int, ip: str = "127.0.0.1", open_browser: bool = False, cull_idle: int = 300,
                    warm: int = WARM_KERNELS) -> list[str]:
    """Voilà's command-line arguments for the dashboard notebook. ``warm`` kernels are kept
    started with the notebook run in them (Voilà's preheated kernels): the model is built and
    traced before a page asks, and a page load takes one (0: every page starts its own)."""
    arguments = [str(NOTEBOOK), f"--port={port}", f"--Voila.ip={ip}", "--Voila.port_retries=0", "--theme=light",
                 "--KernelManager.transport=ipc"]
    if warm > 0:
        arguments += ["--preheat_kernel=True", f"--pool_size={warm}"]
    if cull_idle > 0:
        arguments += [f"--MappingKernelManager.cull_idle_timeout={cull_idle}",
                      f"--MappingKernelManager.cull_interval={max(1, min(60, cull_idle // 2))}"]
    if not open_browser:
        arguments.append("--no-browser")
    return arguments


def voila_command(port: int, ip: str = "127.0.0.1", open_browser: bool = False, cull_idle: int = 300) -> list[str]:
    """The command line that serves the dashboard notebook."""
    return [sys.executable, "-m", "razor_widgets.dashboard.server", *voila_arguments(port, ip, open_browser, cull_idle)]


def run_voila(argv: Sequence[str]) -> None:
    """Run Voilà with ``argv``, configured as docs/dashboard.md says; returns when it stops."""
    import nbformat
    from traitlets.config import Config
    from voila.app import Voila

    class DashboardVoila(Voila):
        def init_settings(self) -> dict:
            settings = super().init_settings()  # makes the contents manager, whose notary checks trust
            self.contents_manager.notary.sign(nbformat.read(NOTEBOOK, as_version=4))
            return settings

    config = Config()
    # jupyter_server pings every page's kernel websocket every WS_PING_INTERVAL ms and closes it when
    # the last pong is older than ws_ping_timeout at the next ping: a timeout equal to the interval
    # closed every page's connection every 30 s (the pong is always nearly one interval old). Three
    # intervals, as jupyter_server's own default; a page gone silent for 90 s is disconnected, and
    # its kernel then culled when idle. tornado reads the same two numbers (in ms) as seconds for a
    # ping of its own, every 30,000 s, and warns that such a timeout is longer than the interval:
    # that warning is dropped (tornado_ping_note), as it concerns no ping that is ever sent.
    config.Voila.tornado_settings = {"disable_check_xsrf": True, "ws_ping_interval": WS_PING_INTERVAL_MS,
                                     "ws_ping_timeout": WS_PING_TIMEOUT_MS}
    logging.getLogger("tornado.general").addFilter(tornado_ping_note)
    config.NotebookNotary.db_file = ":memory:"
    config.NotebookNotary.secret = os.urandom(32)
    app = DashboardVoila.instance(config=config)
    app.initialize(list(argv))
    app.start()


def check_model(source: ModelSource, example: ExampleInput) -> None:
    """Build the model and run it once on ``example`` (a random tensor, or tokens): a model that
    cannot run on it fails here, in one line, before a server starts (tracing errors show on the page)."""
    import torch

    model = source.load()
    try:
        with torch.no_grad():
            run_model(model, example.make())
    except Exception as error:
        raise ValueError(f"{source.spec} cannot run on {example.describe()}: {one_line(error)}") from None


def port_is_free(ip: str, port: int) -> bool:
    """Whether a socket can bind ``ip:port`` now (checked so a busy port fails before Voilà starts)."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


def serve(source: ModelSource, example: ExampleInput, port: int = 8866, ip: str = "127.0.0.1",
          open_browser: bool = False, cull_idle: int = 300) -> int:
    """Check the arguments, print the page's URL, and become the Voilà server until Ctrl-C."""
    import importlib.util

    def fail(message: str) -> None:
        raise SystemExit(f"razor-widgets dashboard: error: {message}")

    if importlib.util.find_spec("voila") is None:
        fail('the dashboard needs Voilà: pip install "razor_widgets[notebooks]"')
    if not port_is_free(ip, port):
        fail(f"cannot listen on {ip}:{port}: the port is in use (or the address is not this machine's); "
             f"give another --port")
    try:
        check_model(source, example)
    except ValueError as error:  # ModelLoadError included
        fail(str(error))
    shape = format_shape(example.shape)
    env = dict(os.environ, **{MODEL_ENV: source.spec, INPUT_SHAPE_ENV: shape, WORKDIR_ENV: os.getcwd()})
    command = voila_command(port, ip, open_browser, cull_idle)
    culling = f"idle kernels of closed pages end after {cull_idle} s" if cull_idle else "no idle culling"
    what = f"{shape} tokens" if example.kind == "tokens" else shape
    print(f"razor-widgets dashboard: {source.spec} (input {what}) at http://{ip}:{port}/ "
          f"({culling}; Ctrl-C stops it)", flush=True)
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


if __name__ == "__main__":
    run_voila(sys.argv[1:])
