"""The official Pub/Sub and Firestore emulators, run as child processes for tests and the demo.

Each emulator (and each functions-framework server started by ``tests.sims.stack``) runs in its own
process group (``start_new_session=True``): ``gcloud`` starts a Java child, and stopping the group is
the only way to be sure the Java process goes too. Output goes to a temporary log file (a full pipe
would block the emulator), and the log tail is put into every start-up error.

A safety net (``atexit`` plus SIGTERM/SIGINT handlers, chained to whatever handlers were there
before) stops every process still running, so emulators never outlive the Python process, also when
a test run is interrupted with Ctrl-C (the terminal's SIGINT does not reach the children, which are
in their own sessions). Nothing can be done about SIGKILL of the parent.

    with PubSubEmulator(project="p") as pubsub, FirestoreEmulator() as firestore:
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host
        ...

or, starting both at once (each takes a few seconds, mostly JVM start-up):

    pubsub, firestore = start_emulators("rostersync-local")
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_START_TIMEOUT = 60.0
LOG_TAIL_CHARS = 4000

_INSTALL_HINT = (
    "install the Google Cloud SDK and run `gcloud components install pubsub-emulator "
    "cloud-firestore-emulator beta` (for an apt-installed SDK: `apt-get install "
    "google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator`); the emulators also "
    "need Java 11+ (`java` on PATH)"
)


class ToolMissing(RuntimeError):
    """gcloud, java or an emulator component is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sdk_root(gcloud: str) -> Path | None:
    root = Path(os.path.realpath(gcloud)).parent.parent
    return root if (root / "platform").is_dir() else None


def check_tools() -> None:
    """Raise ToolMissing with an actionable message unless gcloud, java and the emulators are there."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise ToolMissing(f"gcloud not found on PATH: {_INSTALL_HINT}")
    if shutil.which("java") is None:
        raise ToolMissing(
            "java not found on PATH: the Pub/Sub and Firestore emulators are Java programs; install a "
            "JRE 11+ (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    root = _sdk_root(gcloud)
    if root is None:  # an unusual layout: let the emulator start-up report what is missing
        return
    missing = [
        component
        for component, marker in (
            ("pubsub-emulator", root / "platform" / "pubsub-emulator"),
            ("cloud-firestore-emulator", root / "platform" / "cloud-firestore-emulator"),
        )
        if not marker.exists()
    ]
    install_dir = root / ".install"
    if install_dir.is_dir() and not (install_dir / "beta.manifest").exists():
        missing.append("beta")
    if missing:
        raise ToolMissing(f"gcloud components missing ({', '.join(missing)}) in {root}: {_INSTALL_HINT}")


# --------------------------------------------------------------------------------------------------
# Process groups and the safety net


_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.RLock()
_NET_INSTALLED = False
_ATEXIT_INSTALLED = False
_PREVIOUS_HANDLERS: dict[int, object] = {}


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        with contextlib.suppress(Exception):
            proc.stop()


def _on_signal(signum, frame) -> None:
    _stop_all_live()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. default_int_handler -> KeyboardInterrupt
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL: die the way the signal would have killed us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _note_group(pgid: int) -> None:
    """Tells scripts/lib/common.sh's run_supervised about a process group of ours, so that it
    stops it even when this process dies without cleaning up (a SIGKILL, a hang in C code)."""
    path = os.environ.get("ROSTERSYNC_CHILD_GROUPS", "")
    if path:
        with contextlib.suppress(OSError), open(path, "a", encoding="ascii") as f:
            f.write(f"{pgid}\n")


def _install_safety_net() -> None:
    global _NET_INSTALLED, _ATEXIT_INSTALLED
    if not _ATEXIT_INSTALLED:
        _ATEXIT_INSTALLED = True
        atexit.register(_stop_all_live)
    if _NET_INSTALLED or threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be set from the main thread: a process started first from a
        # worker thread leaves them to the next start from the main thread (atexit covers us).
        return
    _NET_INSTALLED = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if previous is None:  # set from C code: we cannot chain to it, leave it alone
            continue
        _PREVIOUS_HANDLERS[signum] = previous
        signal.signal(signum, _on_signal)


def group_pids(pgid: int) -> list[int]:
    """The live (non-zombie) processes in a process group (Linux /proc; else just the leader)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    pids = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """True if something answers HTTP at url (any status code counts)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


class ManagedProcess:
    """A child process in its own process group, logging to a file, that answers HTTP when ready."""

    name = "process"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self._log_file = None
        self._stopped = False
        self._spawned_at = 0.0
        self.startup_seconds: float | None = None  # spawn -> answering HTTP
        # re-entrant: the signal safety net may call stop() while the main thread is inside it
        self._stop_lock = threading.RLock()

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def pids(self) -> list[int]:
        """The live processes of this process group (gcloud, its Java child, gunicorn workers...)."""
        return group_pids(self.proc.pid) if self.proc else []

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", "replace")

    def _spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        log_prefix: str,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} already started")
        _install_safety_net()
        self._stopped = False
        fd, log_name = tempfile.mkstemp(prefix=f"{log_prefix}-", suffix=".log")
        self.log_path = Path(log_name)
        self._log_file = os.fdopen(fd, "wb")
        self._log_file.write(("$ " + " ".join(map(str, argv)) + "\n").encode())
        self._log_file.flush()
        self._spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        _note_group(self.proc.pid)

    def _wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                self._raise_start_failure(f"exited with code {self.proc.returncode}", tail)
            if ready():
                self.startup_seconds = time.monotonic() - self._spawned_at
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                self._raise_start_failure(f"did not answer on {self.host} within {timeout:.0f} s", tail)
            time.sleep(0.1)

    def _raise_start_failure(self, what: str, tail: str) -> None:
        raise RuntimeError(f"{self.name} {what}; log {self.log_path}:\n{tail}")

    def stop(self, term_timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after term_timeout, and wait."""
        with self._stop_lock:
            proc = self.proc
            if proc is None or self._stopped:
                return
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            for sig, timeout in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
                if self._wait_group_gone(proc, timeout):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            self._stopped = True
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            with _LIVE_LOCK:
                _LIVE.discard(self)

    @staticmethod
    def _wait_group_gone(proc: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            proc.poll()  # reap the leader
            if proc.returncode is not None and not group_pids(proc.pid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# The emulators


class _Emulator(ManagedProcess):
    log_prefix = "emulator"

    def __init__(self, port: int | None = None, start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        super().__init__()
        self._requested_port = port
        self.start_timeout = start_timeout

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        check_tools()
        self.port = self._requested_port or free_port()
        env = dict(os.environ)
        env.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        self._spawn(self._argv(), env=env, log_prefix=self.log_prefix)
        self._wait_ready(lambda: http_answers(f"http://{self.host}/"), self.start_timeout)
        return self

    def _raise_start_failure(self, what: str, tail: str) -> None:
        lowered = tail.lower()
        if "component" in lowered and ("not installed" in lowered or "install" in lowered):
            raise ToolMissing(f"{self.name} could not start ({what}): {_INSTALL_HINT}\n{tail}")
        super()._raise_start_failure(what, tail)


class PubSubEmulator(_Emulator):
    name = "Pub/Sub emulator"
    log_prefix = "pubsub-emulator"

    def __init__(self, project: str = "rostersync-local", port: int | None = None, **kwargs) -> None:
        super().__init__(port, **kwargs)
        self.project = project

    def _argv(self) -> list[str]:
        return [
            "gcloud", "beta", "emulators", "pubsub", "start",
            f"--host-port={self.host}", f"--project={self.project}",
        ]  # fmt: skip


class FirestoreEmulator(_Emulator):
    name = "Firestore emulator"
    log_prefix = "firestore-emulator"

    def _argv(self) -> list[str]:
        return ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host}"]

    def reset(self, project: str) -> None:
        """Delete every document of the project's (default) database."""
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def start_emulators(
    project: str = "rostersync-local", start_timeout: float = DEFAULT_START_TIMEOUT
) -> tuple[PubSubEmulator, FirestoreEmulator]:
    """Start both emulators concurrently; if either fails, stop the other and raise."""
    check_tools()
    pubsub = PubSubEmulator(project=project, start_timeout=start_timeout)
    firestore = FirestoreEmulator(start_timeout=start_timeout)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(pubsub.start), pool.submit(firestore.start)]
        errors = [f.exception() for f in futures]
    if any(errors):
        pubsub.stop()
        firestore.stop()
        raise next(e for e in errors if e is not None)
    return pubsub, firestore
