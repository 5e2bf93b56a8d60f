"""A real Flower deployment on 127.0.0.1, for tests, demos and CI.

:class:`LocalDeployment` starts one SuperLink and ``N`` SuperNodes as separate
OS processes on free loopback ports, with an isolated Flower home (``HOME`` and
``FLWR_HOME`` point into a temporary directory, so the user's
``~/.flwr/config.toml`` is never read or written), and starts apps exactly as a
Flower user does: ``flwr run <app> <connection> --stream``.

By default the deployment is what production looks like: TLS and SuperNode
authentication. A CA, the SuperLink's certificate for 127.0.0.1/localhost and
one authentication key pair per SuperNode are made on the fly
(:func:`secagg.flower.tls.write_deployment_credentials`, in a private
directory under the work directory); the SuperLink runs with
``--ssl-ca-certfile --ssl-certfile --ssl-keyfile --enable-supernode-auth``;
each SuperNode's public key is registered with ``flwr supernode register``
before the SuperNode starts with ``--root-certificates`` and
``--auth-supernode-private-key``; the ``flwr`` connection trusts the CA
(``root-certificates``). ``LocalDeployment(..., insecure=True)`` asks by name
for the development set-up instead: ``--insecure`` everywhere, no node
authentication.

Nothing here imports Flower: the deployment is driven through Flower's own
command-line tools, found next to the current interpreter (``sys.executable``),
so the apps run with the interpreter where ``secagg`` is installed. The SuperLink
is started with ``--disable-runtime-dependency-installation``: Flower then runs the
ServerApp in this environment instead of building a new one from the package
registry for every run.

Cleanup is exhaustive: every process the deployment starts carries a marker in
its environment (inherited by the processes Flower itself spawns: SuperExec,
``flwr-serverapp``, ``flwr-clientapp``), and :meth:`LocalDeployment.stop` stops
the process groups it created and then every live process that carries its
marker, so nothing is left behind even when a test fails half-way.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .tls import DeploymentCredentials, write_deployment_credentials

__all__ = ["LocalDeployment", "NodeProcess", "RunOutput", "DeploymentError", "free_port"]

_MARKER_ENV = "SECAGG_FLOWER_LOCAL_DEPLOYMENT"
_NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
_RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


class DeploymentError(RuntimeError):
    """The local deployment could not start, or a run did not finish in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported config value {value!r}")


def format_config(config: Mapping[str, Any]) -> str:
    """``key=value`` pairs in the syntax of ``--run-config``/``--node-config``."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


@dataclass
class NodeProcess:
    """One SuperNode: its process, ports, log file and (once registered) id."""

    index: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    node_config: dict[str, Any]
    node_id: int | None = None
    killed: bool = False
    #: 0 for the first process of this SuperNode, k after its k-th restart (:meth:`LocalDeployment.restart_node`)
    generation: int = 0

    def log_text(self) -> str:
        try:
            return _ANSI_RE.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def received_messages(self) -> int:
        """How many messages this SuperNode has pulled so far (from its log)."""
        return self.log_text().count("Receiving:")


@dataclass
class RunOutput:
    """What ``flwr run --stream`` printed, its exit code and the wall time."""

    returncode: int
    output: str
    seconds: float
    run_id: int | None = None
    timed_out: bool = False
    events: list[str] = field(default_factory=list)


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # the command name is parenthesised and may contain spaces
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    if not os.path.isdir("/proc"):
        return []
    tree = _proc_children()
    out, stack = [], [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _pids_with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries this deployment's marker."""
    if not os.path.isdir("/proc"):
        return []
    needle = f"{_MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry))
    return found


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X")
    except OSError:
        return True


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalDeployment:
    """One SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1.

    Use as a context manager::

        with LocalDeployment(4, node_configs=[{"partition-id": i} for i in range(4)]) as dep:
            out = dep.run_app("examples/flower_app", run_config={"num-server-rounds": 2})

    ``node_configs[i]`` becomes SuperNode ``i``'s ``--node-config``. Logs of every
    process are kept under :attr:`workdir` (a temporary directory unless given,
    removed on exit unless ``keep_workdir``).
    """

    def __init__(
        self,
        num_nodes: int,
        *,
        node_configs: Sequence[Mapping[str, Any]] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool = False,
        bin_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        connection_name: str = "secagg-local",
        superexec_poll_interval: float = 0.2,
        startup_timeout: float = 60.0,
        insecure: bool = False,
    ) -> None:
        if num_nodes < 1:
            raise ValueError("num_nodes must be >= 1")
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError("node_configs needs one mapping per node")
        self.num_nodes = num_nodes
        self.node_configs = [dict(c) for c in node_configs] if node_configs else [{} for _ in range(num_nodes)]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="secagg-flower-"))
        self.keep_workdir = keep_workdir
        self.bin_dir = Path(bin_dir) if bin_dir is not None else Path(sys.executable).parent
        self.connection_name = connection_name
        self.startup_timeout = startup_timeout
        self.marker = uuid.uuid4().hex
        self.home = self.workdir / "home"
        self.flwr_home = self.home / ".flwr"
        self.superlink_port = 0
        self.superlink: subprocess.Popen[bytes] | None = None
        self.superlink_log = self.workdir / "superlink.log"
        self.nodes: list[NodeProcess] = []
        self.intruders: list[NodeProcess] = []
        self._started: list[subprocess.Popen[bytes]] = []
        self._log_handles: list[Any] = []
        self._watchers: list[threading.Thread] = []
        self._stop_watchers = threading.Event()
        self.events: list[str] = []
        self._extra_env = dict(env or {})
        self._poll = superexec_poll_interval
        if not isinstance(insecure, bool):
            raise TypeError("insecure must be True or False")
        self.insecure = insecure
        self.credentials: DeploymentCredentials | None = None

    # ------------------------------------------------------------ processes

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HOME": str(self.home),
                "FLWR_HOME": str(self.flwr_home),
                "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
                # no outbound network from a test deployment
                "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                # SuperExec polls for new tasks once a second by default
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(self._poll),
                _MARKER_ENV: self.marker,
            }
        )
        env.pop("VIRTUAL_ENV", None)
        env.update(self._extra_env)
        return env

    def _exe(self, name: str) -> str:
        path = self.bin_dir / name
        if path.exists():
            return str(path)
        found = shutil.which(name)
        if found is None:
            raise DeploymentError(f"{name!r} not found next to {sys.executable} nor on PATH: "
                                  "install the flower extra (pip install '.[flower]' from the repository)")
        return found

    def _spawn(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log = open(log_path, "wb")
        self._log_handles.append(log)
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self._env(), cwd=str(self.workdir), start_new_session=True,
        )
        self._started.append(proc)
        return proc

    def _wait_for(self, what: str, check: Callable[[], bool], timeout: float,
                  procs: Sequence[subprocess.Popen[bytes]] = ()) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for p in procs:
                if p.poll() is not None:
                    raise DeploymentError(f"{what}: a process exited early (code {p.returncode}); "
                                          f"see logs in {self.workdir}")
            time.sleep(0.1)
        raise DeploymentError(f"timed out after {timeout:.0f}s waiting for {what}; see logs in {self.workdir}")

    def start(self) -> "LocalDeployment":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.superlink_port = free_port()
        if self.insecure:
            security = ["--insecure"]
        else:
            self.credentials = creds = write_deployment_credentials(self.workdir / "credentials", self.num_nodes)
            security = ["--ssl-ca-certfile", str(creds.ca_cert), "--ssl-certfile", str(creds.server_cert),
                        "--ssl-keyfile", str(creds.server_key), "--enable-supernode-auth"]
        self.superlink = self._spawn(
            [self._exe("flower-superlink"), *security, "--host", "127.0.0.1",
             "--port", str(self.superlink_port), "--disable-runtime-dependency-installation"],
            self.superlink_log,
        )
        self._wait_for("the SuperLink", lambda: self._port_open(self.superlink_port) and
                       "Starting Flower SuperExec" in self._read(self.superlink_log),
                       self.startup_timeout, [self.superlink])
        self._write_flower_config()
        if self.credentials is not None:
            for i in range(self.num_nodes):
                self._register_node(i)
        for i in range(self.num_nodes):
            self._start_node(i)
        self._wait_for(f"{self.num_nodes} SuperNodes to register", self._all_registered,
                       self.startup_timeout, [n.process for n in self.nodes])

    def add_intruder(self, *, trust_ca: bool = True) -> NodeProcess:
        """Start a SuperNode the federation does not know: a fresh
        authentication key that was never registered (and, with
        ``trust_ca=False``, no CA to check the SuperLink with either). On a
        secure deployment the SuperLink must refuse it; it is stopped with
        the deployment. Not counted in :attr:`nodes`."""
        if self.credentials is None:
            raise DeploymentError("an insecure deployment has no node authentication to test")
        from .tls import make_node_auth_key

        index = len(self.intruders)
        private, _ = make_node_auth_key()
        key_path = self.credentials.directory / f"intruder-{index}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        port = free_port()
        log_path = self.workdir / f"intruder-{index}.log"
        args = [self._exe("flower-supernode"), "--auth-supernode-private-key", str(key_path),
                "--superlink", f"127.0.0.1:{self.superlink_port}", "--host", "127.0.0.1", "--port", str(port),
                "--max-retries", "3"]
        if trust_ca:
            args += ["--root-certificates", str(self.credentials.ca_cert)]
        node = NodeProcess(-1 - index, port, log_path, self._spawn(args, log_path), {})
        self.intruders.append(node)
        return node

    def _register_node(self, index: int) -> None:
        """``flwr supernode register``: the SuperLink learns node ``index``'s
        authentication public key (it refuses unregistered SuperNodes)."""
        assert self.credentials is not None
        log_path = self.workdir / f"register-{index}.log"
        proc = self._spawn([self._exe("flwr"), "supernode", "register",
                            str(self.credentials.node_public_keys[index]), self.connection_name], log_path)
        try:
            code = proc.wait(timeout=self.startup_timeout)
        except subprocess.TimeoutExpired:
            self._terminate([proc])
            raise DeploymentError(f"registering SuperNode {index} timed out; see {log_path}") from None
        if code != 0:
            raise DeploymentError(f"registering SuperNode {index} failed (exit {code}): {self._read(log_path)[-2000:]}")

    def _start_node(self, index: int, generation: int = 0, attempt: int = 0) -> None:
        port = free_port()
        name = f"supernode-{index}" + (f".restart-{generation}" if generation else "") + (
            f"-{attempt}" if attempt else "")
        log_path = self.workdir / f"{name}.log"
        if self.credentials is None:
            security = ["--insecure"]
        else:
            security = ["--root-certificates", str(self.credentials.ca_cert),
                        "--auth-supernode-private-key", str(self.credentials.node_private_keys[index])]
        args = [self._exe("flower-supernode"), *security,
                "--superlink", f"127.0.0.1:{self.superlink_port}",
                "--host", "127.0.0.1", "--port", str(port)]
        if self.node_configs[index]:
            args += ["--node-config", format_config(self.node_configs[index])]
        proc = self._spawn(args, log_path)
        node = NodeProcess(index, port, log_path, proc, self.node_configs[index], generation=generation)
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)

    def _all_registered(self) -> bool:
        for node in self.nodes:
            if node.node_id is None:
                m = _NODE_ID_RE.search(node.log_text())
                if m:
                    node.node_id = int(m.group(1))
        return all(n.node_id is not None for n in self.nodes)

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return _ANSI_RE.sub("", path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def _write_flower_config(self) -> None:
        security = ("insecure = true\n" if self.credentials is None else
                    f"root-certificates = {_toml_value(str(self.credentials.ca_cert))}\n")
        (self.flwr_home / "config.toml").write_text(
            "[superlink]\n"
            f'default = "{self.connection_name}"\n\n'
            f"[superlink.{self.connection_name}]\n"
            f'address = "127.0.0.1:{self.superlink_port}"\n'
            + security
        )

    @property
    def node_ids(self) -> dict[int, int]:
        """SuperNode index -> Flower node id."""
        return {n.index: int(n.node_id) for n in self.nodes if n.node_id is not None}

    # ------------------------------------------------------------ runs

    def run_app(self, app_dir: str | os.PathLike[str], *, run_config: Mapping[str, Any] | None = None,
                timeout: float = 300.0) -> RunOutput:
        """``flwr run <app_dir> <connection> --stream``; waits until the run ends."""
        args = [self._exe("flwr"), "run", str(Path(app_dir).resolve()), self.connection_name, "--stream"]
        if run_config:
            args += ["--run-config", format_config(run_config)]
        log_path = self.workdir / f"flwr-run-{len(self._started)}.log"
        start = time.monotonic()
        proc = self._spawn(args, log_path)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._terminate([proc])
        seconds = time.monotonic() - start
        output = self._read(log_path)
        m = _RUN_ID_RE.search(output)
        return RunOutput(proc.returncode if proc.returncode is not None else -9, output, seconds,
                         int(m.group(1)) if m else None, timed_out, list(self.events))

    # ------------------------------------------------------------ faults

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Crash SuperNode ``index``: ``sig`` to it and everything it spawned."""
        node = self.nodes[index]
        pids = [node.process.pid] + _descendants(node.process.pid)
        _signal_group(node.process.pid, sig)
        _signal_pids(pids, sig)
        node.killed = True
        self.events.append(f"killed node {index} (node id {node.node_id}) after "
                           f"{node.received_messages()} received messages")

    def restart_node(self, index: int, *, timeout: float = 180.0, retry_every: float = 5.0) -> NodeProcess:
        """Start SuperNode ``index`` again after :meth:`kill_node`: a new process
        with the same authentication key and node config, as an operator (or a
        service manager) restarting a crashed node would; waits until it has
        joined the SuperLink again and returns it. Its log files are
        ``supernode-<index>.restart-<k>.log`` (then ``-<attempt>``).

        Flower's SuperLink refuses to activate a node id it still lists
        online ("Failed to activate SuperNode"; the new process exits at
        once): a node that crashed stays listed until its last heartbeat
        expires (two heartbeat intervals, 30 s each by default). Such a start
        is retried every ``retry_every`` seconds until ``timeout``; any other
        early exit raises :class:`DeploymentError`. The old process must be gone."""
        old = self.nodes[index]
        try:
            old.process.wait(timeout=5.0)  # a SIGKILL just sent takes a moment to land
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"SuperNode {index} is still running: kill it first") from None
        generation = old.generation + 1
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            self._start_node(index, generation=generation, attempt=attempt)
            node = self.nodes[index]
            while time.monotonic() < deadline and node.process.poll() is None and not self._all_registered():
                time.sleep(0.1)
            if self._all_registered() and node.process.poll() is None:
                break
            refused = "Failed to activate SuperNode" in node.log_text()
            if node.process.poll() is None:  # still starting at the deadline
                self._terminate([node.process])
            if not refused or time.monotonic() + retry_every >= deadline:
                raise DeploymentError(f"SuperNode {index} did not join again within {timeout:.0f}s "
                                      f"({attempt + 1} attempt(s)); see {node.log_path}")
            attempt += 1
            time.sleep(retry_every)
        self.events.append(f"restarted node {index} (node id {node.node_id}, was {old.node_id}) "
                           f"after {attempt + 1} attempt(s)")
        return node

    def kill_node_on_message(self, index: int, nth_message: int, sig: int = signal.SIGKILL) -> None:
        """Crash SuperNode ``index`` as soon as it has pulled its ``nth_message``-th
        message from the SuperLink from now on (counted from 1), before it can reply.

        Pulling a message and starting the ClientApp process for it takes Flower
        around a second; the watcher reads the node's log every 20 ms, so the
        node dies holding the message, in the middle of that protocol round."""

        node = self.nodes[index]
        target = node.received_messages() + nth_message

        def watch() -> None:
            while not self._stop_watchers.is_set():
                if node.received_messages() >= target:
                    self.kill_node(index, sig)
                    return
                time.sleep(0.02)

        t = threading.Thread(target=watch, name=f"kill-node-{index}", daemon=True)
        t.start()
        self._watchers.append(t)

    # ------------------------------------------------------------ teardown

    def _terminate(self, procs: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        for p in procs:
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM)
                _signal_pids([p.pid] + _descendants(p.pid), signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGKILL)
                _signal_pids([p.pid] + _descendants(p.pid), signal.SIGKILL)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

    def leftover_processes(self) -> list[int]:
        """Live (non-zombie) processes still carrying this deployment's marker."""
        return [p for p in _pids_with_marker(self.marker) if not _is_zombie_or_gone(p)]

    def stop(self) -> None:
        """Stop every process of this deployment (idempotent)."""
        self._stop_watchers.set()
        for t in self._watchers:
            t.join(timeout=2)
        # SuperNodes first (they would otherwise retry a vanished SuperLink)
        self._terminate([p for p in self._started if p is not self.superlink])
        if self.superlink is not None:
            self._terminate([self.superlink])
        # anything Flower spawned in a session of its own, or that outlived its parent
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.leftover_processes()
            if not pids:
                break
            _signal_pids(pids, sig)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and self.leftover_processes():
                time.sleep(0.1)
        for p in self._started:
            if p.poll() is None:
                try:
                    p.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        for h in self._log_handles:
            try:
                h.close()
            except OSError:
                pass
        self._log_handles.clear()

    def cleanup_workdir(self) -> None:
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalDeployment":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup_workdir()

    def logs(self) -> str:
        """Every log of the deployment, for a failure report."""
        parts = [f"===== {self.superlink_log.name}\n{self._read(self.superlink_log)}"]
        for n in self.nodes:
            parts.append(f"===== {n.log_path.name} (node id {n.node_id})\n{n.log_text()}")
        return "\n".join(parts)
