"""A real nginx (Debian's package) serving a directory on loopback: a mirror of the bundle repository.

``NginxMirror(root, workdir)`` writes a minimal config (static files, HTTP Range on, logs and
temp files under ``workdir``), starts ``nginx -g 'daemon off;'`` on a free 127.0.0.1 port and
waits until it answers. ``stop()`` kills it (a mirror that went away), ``start()`` brings it back
on the same port; ``pause()``/``resume()`` SIGSTOP/SIGCONT it (a stalled mirror: connections accepted
by the kernel, no byte sent); ``limit_rate`` (nginx syntax, e.g. ``"64k"``) caps each response's rate
(a slow or trickling mirror). nginx is installed with apt-get when missing (tests/debian.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Final

from debian import ensure_program

START_TIMEOUT_S: Final = 15.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NginxMirror:
    """One nginx process serving ``root`` read-only at ``url``."""

    def __init__(self, root: Path, workdir: Path, limit_rate: str | None = None) -> None:
        self.nginx = ensure_program(["nginx"], "nginx", "to serve the repository mirrors", (Path("/usr/sbin/nginx"),))
        self.root, self.workdir = root, workdir
        self.limit_rate = limit_rate
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        w = self.workdir
        rate = f"    limit_rate {self.limit_rate};\n" if self.limit_rate else ""
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read test dirs (mode 0700 as root)
        temps = "".join(f"  {kind}_temp_path {w / 'tmp' / kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (
            f"{user}worker_processes 1;\npid {w / 'nginx.pid'};\nerror_log {w / 'error.log'} warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"  access_log {w / 'access.log'};\n{temps}"
            "  types { application/json json; application/x-tar tar; }\n"
            "  default_type application/octet-stream;\n"
            "  sendfile on;\n"
            f"  server {{\n    listen 127.0.0.1:{self.port};\n    root {self.root};\n{rate}"
            "    location / { try_files $uri =404; }\n  }\n}\n"
        )

    def start(self) -> NginxMirror:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.proc = subprocess.Popen(
            [self.nginx, "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,  # master and worker in one process group: stop() kills both
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited at start (status {self.proc.returncode}): {err[-1500:]}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=1.0).close()
            except urllib.error.HTTPError:
                return self  # any HTTP answer (403/404 for the bare root) means it is serving
            except OSError:
                time.sleep(0.05)
                continue
            return self
        self.stop()
        raise RuntimeError(f"nginx did not answer on {self.url} within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Kill master and worker at once (a mirror that went away mid-transfer)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP master and worker: the port still accepts connections, nothing answers (a stalled mirror)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
