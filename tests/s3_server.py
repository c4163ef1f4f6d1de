"""A local S3 server (moto's ThreadedMotoServer) for tests of s3:// inputs and outputs.

`s3_server` starts one server per test session on 127.0.0.1 and a free port. `s3_bucket` points the
environment at it for one test (fake credentials, AWS_ENDPOINT_URL, region: s3fs in this process and
in subprocesses such as `python -m data_pipeline` pick them up) and creates a fresh, empty bucket.

Use them from a test module with `from tests.s3_server import s3_bucket, s3_server  # noqa: F401`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_bucket_numbers = itertools.count()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str = "us-east-1"

    def env(self, home: Path) -> dict[str, str]:
        """The environment that sends AWS clients to this server; `home` holds empty AWS config files, so
        that nothing from the machine's ~/.aws (a profile, real credentials) leaks into a test."""
        config, credentials = home / "aws_config", home / "aws_credentials"
        config.touch()
        credentials.touch()
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch, tmp_path_factory) -> Iterator[str]:
    """`s3://NAME` of a new empty bucket on the local server, with the environment set to reach it."""
    import s3fs

    for key, value in s3_server.env(tmp_path_factory.mktemp("aws")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made under another test's environment
    name = f"test-bucket-{next(_bucket_numbers)}"
    s3fs.S3FileSystem().mkdir(name)
    yield f"s3://{name}"
    s3fs.S3FileSystem.clear_instance_cache()
