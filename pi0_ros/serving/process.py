"""Run `pi0-ros serve` in a child process (eval/demo --remote, bench serve, tests)."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time


class ServeProcess:
    """`pi0-ros serve ARGS --host HOST --port PORT` as a child process; `uri` once it listens.

    Port 0 (default) lets the server pick a free port; its "listening on ws://..." line tells it.
    """

    def __init__(self, args: list[str], host: str = "127.0.0.1", port: int = 0, env: dict[str, str] | None = None) -> None:
        self.args, self.host, self.port = list(args), host, int(port)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.uri: str | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=200)

    def start(self, timeout: float = 180.0) -> ServeProcess:
        cmd = [sys.executable, "-m", "pi0_ros.cli", "serve", *self.args, "--host", self.host, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                     stdin=subprocess.DEVNULL)
        found = threading.Event()

        def drain() -> None:
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                m = re.search(r"listening on (ws://\S+)", line)
                if m and not found.is_set():
                    self.uri = m.group(1)
                    found.set()

        threading.Thread(target=drain, name="serve_output", daemon=True).start()
        end = time.monotonic() + timeout
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("pi0-ros serve did not start:\n" + "\n".join(self.output))
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def remote_policy_params(checkpoint: str, noise_scale: float | None, server_uri: str = "", keys: str = "",
                         serve_args: list[str] | None = None,
                         num_steps: int | None = None) -> tuple[dict, ServeProcess | None]:
    """Policy-node parameters for `backend: remote`, and the `pi0-ros serve` child process
    started for `checkpoint` on 127.0.0.1 when no `server_uri` is given (stop it when done).
    noise_scale / num_steps None: the server takes the checkpoint's inference.json, else its defaults."""
    server = None
    if not server_uri:
        args = ["--warmup", "1", *(serve_args or [])]
        if noise_scale is not None:
            args += ["--noise-scale", str(noise_scale)]
        if num_steps is not None:
            args += ["--num-steps", str(num_steps)]
        if checkpoint:
            args += ["--checkpoint", checkpoint]
        server = ServeProcess(args).start()
        server_uri = server.uri
    return {"backend": "remote", "server_uri": server_uri, "remote_keys": keys}, server
