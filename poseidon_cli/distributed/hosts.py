"""Poseidon's hosts file (machinefile) and "which client am I".

Format: one line per client, ``<client_id> <ip> <port>``; ``#`` starts a comment; blank lines are
ignored. Ids must be exactly 0..N-1 (any order in the file); (ip, port) pairs must be unique.
Every error is a ``ClusterError`` naming the file and line.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from ..errors import ClusterError

#: launcher environment variables that carry this process's rank, in the order we trust them
RANK_ENV_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "JOB_COMPLETION_INDEX")


@dataclass(frozen=True)
class Host:
    client_id: int
    ip: str
    port: int
    line: int = 0

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def parse_hosts(path) -> list[Host]:
    """Read and validate a hosts file; returns hosts sorted by client id."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise ClusterError(f"{path}: no such hosts file",
                           "write one line '<client_id> <ip> <port>' per machine") from None
    except IsADirectoryError:
        raise ClusterError(f"{path}: is a folder, not a hosts file", "give the hosts file") from None
    except UnicodeDecodeError as exc:
        line = lines_before(path, exc.start)
        raise ClusterError(f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})",
                           "write the hosts file as plain text: '<client_id> <ip> <port>' per line") from None
    except PermissionError:
        raise ClusterError(f"{path}: no permission to read the hosts file", "check its mode") from None
    hosts, seen_ids, seen_addr = [], {}, {}
    for no, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        where = f"{path}:{no}"
        if len(parts) != 3:
            raise ClusterError(f"{where}: expected '<client_id> <ip> <port>', got '{_shown(text)}'",
                               "write three fields per line")
        cid, ip, port = parts
        try:
            cid = int(cid)
        except ValueError:
            raise ClusterError(f"{where}: client id '{_shown(cid)}' is not an integer",
                               "number the lines' clients 0..N-1") from None
        try:
            port = int(port)
        except ValueError:
            raise ClusterError(f"{where}: port '{_shown(port)}' is not an integer",
                               "give a TCP port number 1..65535") from None
        if not 0 < port < 65536:
            raise ClusterError(f"{where}: port {port} is outside 1..65535", "use a free port such as 9000")
        if cid < 0:
            raise ClusterError(f"{where}: client id {cid} is negative", "number the clients 0..N-1")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            try:
                socket.getaddrinfo(ip, None)
            except OSError:
                raise ClusterError(f"{where}: '{_shown(ip)}' is neither an IP address nor a resolvable host name",
                                   "check the name or give the IP address") from None
        if cid in seen_ids:
            raise ClusterError(f"{where}: client id {cid} already used on line {seen_ids[cid]}",
                               "give every line its own client id")
        if (ip, port) in seen_addr:
            raise ClusterError(f"{where}: {ip}:{port} already used on line {seen_addr[(ip, port)]}",
                               "every client needs its own port")
        seen_ids[cid] = no
        seen_addr[(ip, port)] = no
        hosts.append(Host(cid, ip, port, no))
    if not hosts:
        raise ClusterError(f"{path}: no hosts listed", "write one line '<client_id> <ip> <port>' per machine")
    ids = sorted(h.client_id for h in hosts)
    if ids != list(range(len(hosts))):
        missing = sorted(set(range(len(hosts))) - set(ids))
        raise ClusterError(f"{path}: client ids must be 0..{len(hosts) - 1}; missing {missing}",
                           "number the lines' clients 0..N-1 without gaps")
    return sorted(hosts, key=lambda h: h.client_id)


def _shown(text: str, limit: int = 60) -> str:
    """User text for a message: printable, one line, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def lines_before(path, offset: int) -> int:
    """1-based line holding byte ``offset`` of ``path``."""
    with open(path, "rb") as fh:
        return fh.read(offset).count(b"\n") + 1


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def all_loopback(hosts) -> bool:
    return all(is_loopback(h.ip) for h in hosts)


def _local_addresses() -> set[str]:
    addrs = {"127.0.0.1", "::1", "localhost"}
    try:
        name = socket.gethostname()
        addrs.add(name)
        for info in socket.getaddrinfo(name, None):
            addrs.add(info[4][0])
    except OSError:
        pass
    return addrs


def discover_client_id(hosts, explicit: int | None = None, env=None) -> int | None:
    """This process's client id: ``explicit``, else a launcher's rank variable, else the one
    hosts-file line whose address is local (non-loopback). None when it cannot be told."""
    env = os.environ if env is None else env
    n = len(hosts)
    if explicit is not None:
        if not 0 <= explicit < n:
            raise ClusterError(f"--client-id {explicit} is not in the hosts file (ids 0..{n - 1})",
                               "pass one of the hosts file's client ids")
        return explicit
    for var in RANK_ENV_VARS:
        if env.get(var, "").strip():
            try:
                rank = int(env[var])
            except ValueError:
                raise ClusterError(f"environment {var}='{_shown(env[var])}' is not an integer rank",
                                   f"unset {var} or pass --client-id K") from None
            if not 0 <= rank < n:
                raise ClusterError(f"environment {var}={rank} but the hosts file lists {n} clients (0..{n - 1})",
                                   "start as many processes as the hosts file has lines")
            return rank
    local = _local_addresses()
    matches = [h for h in hosts if h.ip in local and not is_loopback(h.ip)]
    if len(matches) == 1:
        return matches[0].client_id
    return None


def run_dir_name(net_name: str, staleness: int, num_clients: int, workers_per_client: int = 1) -> str:
    """Poseidon's output folder name: ``<net>.S<staleness>.M<clients>.T<workers per client>``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (net_name or "net"))
    return f"{safe}.S{staleness}.M{num_clients}.T{workers_per_client}"
