"""Child processes of the simulation: started with logs to files, waited for, and always stopped.

Each child gets its own process group, so stopping it also stops what it spawned; stop order is the reverse of
start order (load first, database last). SIGTERM first, SIGKILL after a grace period.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


class PortInUse(RuntimeError):
    """The child exited because its port was taken between picking it and binding it."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: str

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class ProcessGroup:
    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Child:
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log = open(log_path, "wb")  # noqa: SIM115 (closed when the child ends, by the child's copy)
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def wait_http(self, child: Child, url: str, timeout: float = 30.0) -> None:
        """Until `url` answers 200; fails with the child's log tail when it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                tail = child.tail()
                error = PortInUse if "address already in use" in tail.lower() else RuntimeError
                raise error(f"{child.name} exited with code {child.proc.returncode}:\n{tail}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{child.name} not ready at {url} after {timeout:.0f}s:\n{child.tail()}")

    def check_alive(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} died (exit {child.proc.returncode}):\n{child.tail()}")

    def stop(self, child: Child, grace: float = 5.0) -> int | None:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait(5)
        return child.proc.returncode

    def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                self.stop(child)
