"""Where provider calls may go: the key only to the configured scheme, host and port; outputs only over http(s),
from public addresses (or the kinds of address the base URL is itself), through few redirects, capped in size."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from engine.backend import ProviderRef
from engine.errors import BackendError, ProtocolError
from engine.providers.client import MAX_REDIRECTS, ProviderHttp, address_kind
from engine.providers.fal import FalFluxPulidBackend
from engine.providers.replicate import ReplicateFluxPulidBackend
from engine.providers.settings import FalSettings, ReplicateSettings
from engine.request import GenerationRequest
from tests.fakes import fal, replicate
from tests.fakes.fal import FakeFal
from tests.fakes.providers_common import FakeProvider, Fault, RecordingProgress, tiny_image
from tests.fakes.replicate import FakeReplicate
from tests.virtual_clock import VirtualClock

# A public address nothing here connects to: as a base URL it makes every local address foreign.
PUBLIC_BASE = "https://93.184.216.34"


class Elsewhere(FakeProvider):
    """A server a provider's answer might point to: another port, another host's stand-in, or a CDN that
    redirects. It records whatever reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_route("*", "/steal/{tail:.*}", self._steal, name="steal")
        self.app.router.add_get("/hop/{left}/{name}", self._hop, name="hop")
        self.app.router.add_get("/to", self._to, name="to")

    async def _steal(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "COMPLETED"})

    async def _hop(self, request: web.Request) -> web.Response:
        left, name = int(request.match_info["left"]), request.match_info["name"]
        target = f"/cdn/{name}" if left == 0 else f"/hop/{left - 1}/{name}"
        raise web.HTTPFound(target)

    async def _to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["location"])


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    async with Elsewhere() as server:
        yield server


def client(session: aiohttp.ClientSession, base_url: str, *, max_output_bytes: int = 1 << 20) -> ProviderHttp:
    auth = {"Authorization": "Key s3cret"}
    return ProviderHttp(
        session, "fal", base_url=base_url, auth=auth, secrets=["s3cret"], max_output_bytes=max_output_bytes
    )


def face_request() -> GenerationRequest:
    return GenerationRequest(prompt="a knight", faces=(tiny_image("jpeg"),))


# --- calls that carry the key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://queue.fal.run/fal-ai/flux-pulid/requests/1/status",
        "https://QUEUE.fal.run:443/fal-ai/flux-pulid/requests/1/status",
    ],
)
def test_urls_on_the_configured_origin_are_followed(http_session: aiohttp.ClientSession, url: str) -> None:
    client(http_session, "https://queue.fal.run").check_home(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/fal-ai/flux-pulid/requests/1/status",
        "http://queue.fal.run/fal-ai/flux-pulid/requests/1/status",
        "https://queue.fal.run:8443/fal-ai/flux-pulid/requests/1/status",
        "https://queue.fal.run.evil.example/x",
        "https://queue.fal.run@evil.example/x",
        "//evil.example/x",
        "not a url at all",
    ],
    ids=["other-host", "other-scheme", "other-port", "suffix-host", "userinfo-trick", "no-scheme", "garbage"],
)
def test_urls_elsewhere_are_refused(http_session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(ProtocolError):
        client(http_session, "https://queue.fal.run").check_home(url)


async def test_fal_status_urls_pointing_elsewhere_are_not_followed_with_the_key(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, elsewhere: Elsewhere, clock: VirtualClock
) -> None:
    stolen = f"{elsewhere.url}/steal/fal-ai/flux-pulid/requests/r1"
    answer = {
        "request_id": "r1",
        "status_url": f"{stolen}/status",
        "response_url": stolen,
        "cancel_url": f"{stolen}/cancel",
    }
    fake_fal.fail("submit", Fault(status=200, json=answer))
    backend = FalFluxPulidBackend(http_session, FalSettings(key=SecretStr(fal.KEY), base_url=fake_fal.url), clock=clock)
    progress = RecordingProgress()
    with pytest.raises(ProtocolError) as refused:
        await backend.generate(face_request(), progress)
    assert "not followed" in refused.value.detail and fal.KEY not in refused.value.detail
    await backend._cancel(progress.refs[-1])  # what a user's cancel would send
    assert elsewhere.log == []
    assert len(fake_fal.requests("submit")) == 1


async def test_a_stored_request_whose_urls_point_elsewhere_is_not_resumed(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, elsewhere: Elsewhere, clock: VirtualClock
) -> None:
    backend = FalFluxPulidBackend(http_session, FalSettings(key=SecretStr(fal.KEY), base_url=fake_fal.url), clock=clock)
    urls = {kind: f"{elsewhere.url}/steal/{kind}" for kind in ("status", "response", "cancel")}
    progress = RecordingProgress(resume=ProviderRef(backend=backend.name, request_id="r9", urls=urls))
    with pytest.raises(ProtocolError):
        await backend.generate(face_request(), progress)
    assert elsewhere.log == [] and fake_fal.log == []


async def test_replicate_prediction_urls_pointing_elsewhere_are_not_followed(
    http_session: aiohttp.ClientSession, fake_replicate: FakeReplicate, elsewhere: Elsewhere, clock: VirtualClock
) -> None:
    answer = {
        "id": "p1",
        "status": "starting",
        "urls": {"get": f"{elsewhere.url}/steal/p1", "cancel": f"{elsewhere.url}/steal/p1/cancel"},
    }
    fake_replicate.fail("create", Fault(status=201, json=answer))
    settings = ReplicateSettings(
        token=SecretStr(replicate.TOKEN), base_url=fake_replicate.url, version=replicate.VERSION
    )
    backend = ReplicateFluxPulidBackend(http_session, settings, clock=clock)
    progress = RecordingProgress()
    with pytest.raises(ProtocolError):
        await backend.generate(face_request(), progress)
    await backend._cancel(progress.refs[-1])
    assert elsewhere.log == []


async def test_a_redirect_from_a_call_with_the_key_is_not_followed(
    http_session: aiohttp.ClientSession, fake_fal: FakeFal, elsewhere: Elsewhere, clock: VirtualClock
) -> None:
    fake_fal.fail("submit", Fault(status=307, headers={"Location": f"{elsewhere.url}/steal/submit"}))
    backend = FalFluxPulidBackend(http_session, FalSettings(key=SecretStr(fal.KEY), base_url=fake_fal.url), clock=clock)
    with pytest.raises(BackendError):  # whatever a 307 is classified as, it is not followed
        await backend.generate(face_request(), RecordingProgress())
    assert elsewhere.log == []


# --- output downloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["file:///etc/passwd", "ftp://cdn.example/out.png", "gopher://127.0.0.1:70/_", "s3://bucket/out.png"]
)
async def test_outputs_come_only_over_http(http_session: aiohttp.ClientSession, ref: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        await client(http_session, "https://queue.fal.run").fetch_output(ref)
    assert "not http(s)" in refused.value.detail


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("2130706433", "loopback"),  # 127.0.0.1 written as one number
        ("0.0.0.0", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("100.64.0.1", "reserved"),
    ],
)
async def test_outputs_from_internal_addresses_are_refused_before_connecting(
    http_session: aiohttp.ClientSession, elsewhere: Elsewhere, host: str, kind: str
) -> None:
    name = elsewhere.publish(tiny_image("png"), "image/png").rsplit("/", 1)[-1]
    port = elsewhere.url.rsplit(":", 1)[-1]
    with pytest.raises(ProtocolError) as refused:
        await client(http_session, PUBLIC_BASE).fetch_output(f"http://{host}:{port}/cdn/{name}")
    assert f"leads to a {kind} address" in refused.value.detail
    assert elsewhere.log == []


def test_address_kinds() -> None:
    assert address_kind(ipaddress.ip_address("93.184.216.34")) is None
    assert address_kind(ipaddress.ip_address("2606:4700::1111")) is None
    assert address_kind(ipaddress.ip_address("fe80::1")) == "link-local"
    assert address_kind(ipaddress.ip_address("fd00::1")) == "private"
    assert address_kind(ipaddress.ip_address("224.0.0.1")) == "reserved"


async def test_a_base_url_on_loopback_lets_outputs_come_from_loopback_only(
    http_session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    png = tiny_image("png")
    url = elsewhere.publish(png, "image/png")
    http = client(http_session, elsewhere.url)
    assert (await http.fetch_output(url)).data == png
    for target, kind in (("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://10.0.0.1/", "private")):
        with pytest.raises(ProtocolError) as refused:
            await http.fetch_output(f"{elsewhere.url}/to?location={target}")
        assert f"leads to a {kind} address" in refused.value.detail


async def test_downloads_follow_a_few_redirects_and_never_carry_the_key(
    http_session: aiohttp.ClientSession, elsewhere: Elsewhere
) -> None:
    png = tiny_image("png")
    name = elsewhere.publish(png, "image/png").rsplit("/", 1)[-1]
    http = client(http_session, elsewhere.url)
    assert (await http.fetch_output(f"{elsewhere.url}/hop/{MAX_REDIRECTS - 1}/{name}")).data == png
    assert len(elsewhere.log) == MAX_REDIRECTS + 1
    assert all("Authorization" not in request.headers for request in elsewhere.log)
    with pytest.raises(ProtocolError) as refused:
        await http.fetch_output(f"{elsewhere.url}/hop/{MAX_REDIRECTS}/{name}")
    assert f"more than {MAX_REDIRECTS} redirects" in refused.value.detail


async def test_downloads_are_capped_in_size(http_session: aiohttp.ClientSession, elsewhere: Elsewhere) -> None:
    url = elsewhere.publish(tiny_image("png", (300, 300)), "image/png")
    http = client(http_session, elsewhere.url, max_output_bytes=100)
    with pytest.raises(ProtocolError) as refused:
        await http.fetch_output(url)
    assert "exceeds 100 bytes" in refused.value.detail
