"""A real single-node SLURM cluster on loopback, for the tests: Debian's slurm-wlm and munge.

`SlurmCluster(folder)` writes a slurm.conf into `folder`, starts munged, slurmctld and slurmd
(no systemd here: the daemons are started by hand and stopped by their PIDs), waits until the
node is idle, and stops every daemon it started on exit. There is no accounting database: the
executor plugin is told to query job status with squeue instead of sacct.

The configuration is also linked at SLURM's default path, /etc/slurm/slurm.conf, as on a real
cluster: the executor's job step starts `srun` with every SLURM_* variable but a few removed,
SLURM_CONF among them, so inside a job only the default path is found. A machine that already
has a configuration there is left alone (the cluster refuses to start).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

COMMANDS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ("slurm-wlm", "munge")


def ensure_installed() -> str | None:
    """Install Debian's SLURM and munge if they are missing (as root, with apt-get); return
    why that cannot be done, or None when they are there."""
    missing = [c for c in COMMANDS if shutil.which(c) is None
               and not Path("/usr/sbin", c).exists()]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"SLURM is missing ({', '.join(missing)}) and cannot be installed without root apt"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr[-500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """Start a one-node cluster in `folder`; use as a context manager."""

    def __init__(self, folder: Path, cpus: int = 8, memory_mb: int = 8000):
        self.folder = Path(folder)
        self.cpus, self.memory_mb = cpus, memory_mb
        self.host = socket.gethostname()
        self.conf = self.folder / "slurm.conf"
        self.pids: list[int] = []
        self.linked_default = False

    def env(self) -> dict[str, str]:
        """The environment in which SLURM's client commands reach this cluster."""
        return os.environ | {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        for name in ("state", "spool", "log"):
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        f = self.folder
        self.conf.write_text(f"""\
ClusterName=digestlab
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={f / "munge.socket"}
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool"}
SlurmctldPidFile={f / "slurmctld.pid"}
SlurmdPidFile={f / "slurmd.pid"}
SlurmctldLogFile={f / "log" / "slurmctld.log"}
SlurmdLogFile={f / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
# the node offers what this file says, whatever the machine has: jobs sized for a real
# cluster's nodes (8 CPUs) run here too, slower
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, command: list[str], pid_file: Path) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} did not start: {done.stderr[-1000:]}")
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                self.pids.append(int(pid_file.read_text().split()[0]))
                return
            time.sleep(0.05)
        raise RuntimeError(f"{command[0]} wrote no pid file {pid_file}")

    def __enter__(self) -> SlurmCluster:
        if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
            DEFAULT_CONF.unlink()  # left by a killed test run: its folder is gone
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            raise RuntimeError(f"{DEFAULT_CONF} exists: this machine has a SLURM of its own")
        self._write_conf()
        f = self.folder
        try:
            DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
            DEFAULT_CONF.symlink_to(self.conf)
            self.linked_default = True
            # munged refuses to run as root without --force; it serves this cluster alone.
            self._start(["/usr/sbin/munged", "--force", f"--socket={f / 'munge.socket'}",
                         f"--pid-file={f / 'munged.pid'}", f"--log-file={f / 'log' / 'munged.log'}",
                         f"--seed-file={f / 'munge.seed'}"], f / "munged.pid")
            self._start(["/usr/sbin/slurmctld", "-f", str(self.conf)], f / "slurmctld.pid")
            self._start(["/usr/sbin/slurmd", "-f", str(self.conf)], f / "slurmd.pid")
            self._wait_until_idle()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_idle(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                  env=self.env())
            if done.returncode == 0 and done.stdout.strip() == "idle":
                return
            time.sleep(0.2)
        log = (self.folder / "log" / "slurmctld.log").read_text()[-2000:]
        raise RuntimeError(f"the SLURM node never became idle:\n{log}")

    def __exit__(self, *exc: object) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in self.pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        if self.linked_default:
            DEFAULT_CONF.unlink(missing_ok=True)
            self.linked_default = False
