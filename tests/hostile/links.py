"""Hostile links: other schemes, internal addresses, redirects to them, odd file names.

Address cases run with the default ``[download]`` config (nothing allowed): the link
is refused before any connection, which the HTTPS fixture server confirms where the
link points at it. Redirect cases allow 127.0.0.1 (the fixture server) for the first
hop only; the hop they redirect to must be refused.
"""

from __future__ import annotations

from .cases import Case, Scene


def _html_link(href: str):
    def build(scene: Scene) -> None:
        html = f'<p>Your export: <a href="{href}">download</a></p>'
        scene.export(text="Your export is ready.\n", html=html)

    return build


def _text_link(link: str):
    def build(scene: Scene) -> None:
        scene.export(text=f"Your export is ready: {link}\n")

    return build


def _fixture_link(host: str):
    """A link to the fixture server through ``host`` (not allowed): refused, no request."""

    def build(scene: Scene) -> None:
        server = scene.web
        url = server.add("/exports/5-9-local.csv", b"id\n1\n")
        scene.export(url.replace("127.0.0.1", host))
        scene.no_request(server, "/exports/5-9-local.csv")

    return build


def _redirect(target: str):
    """A link to the fixture server, allowed by name (``localhost``) only, redirecting to
    ``target``."""

    def build(scene: Scene) -> None:
        server = scene.web
        scene.table("download")["allow_hosts"] = ["localhost"]
        port = server.base_url.rsplit(":", 1)[1]
        secret = server.add("/internal/5-9-secret.csv", b"id\nsecret\n")
        link = server.add("/exports/5-9-redirect.csv", redirect_to=target.format(port=port))
        scene.export(link.replace("127.0.0.1", "localhost"))

        def first_hop_made(result) -> None:
            assert server.requests_for("/exports/5-9-redirect.csv"), "the link was not tried"

        scene.check(first_hop_made)
        scene.no_request(server, "/internal/5-9-secret.csv")
        assert secret

    return build


def _redirect_loop(scene: Scene) -> None:
    server = scene.web
    scene.allow_local()
    first = server.base_url + "/loop/a.csv"
    server.add("/loop/b.csv", redirect_to=first)
    scene.export(server.add("/loop/a.csv", redirect_to=server.base_url + "/loop/b.csv"))


def _served(path: str, *, link_path: str | None = None):
    """An export served by the fixture server at ``path`` (127.0.0.1 allowed)."""

    def build(scene: Scene) -> None:
        server = scene.web
        scene.allow_local()
        url = server.add(path, b"id\n1\n")
        if link_path is not None:
            url = server.base_url + link_path
        scene.export(url)
        scene.must_not_exist(scene.base / "hostile-link.csv", scene.root / "hostile-link.csv")

    return build


def _names_by_case(scene: Scene) -> None:
    server = scene.web
    scene.allow_local()
    scene.export(server.add("/exports/5-10-Sites.csv", b"id\n1\n"))
    scene.export(server.add("/exports/5-10-sites.csv", b"id\n2\n"))

    def both_kept(result):
        assert (scene.delivered / "5-10-Sites.csv").read_bytes() == b"id\n1\n"
        assert (scene.delivered / "5-10-sites.csv").read_bytes() == b"id\n2\n"

    scene.check(both_kept)


def _long_name(scene: Scene) -> None:
    _served("/exports/5-11-" + "l" * 600 + ".csv")(scene)

    def short_names(result):
        names = [p.name for p in scene.delivered.iterdir()]
        assert all(len(n.encode()) <= 255 for n in names)
        assert any(n.startswith("5-11-lll") and n.endswith(".csv") for n in names)

    scene.check(short_names)


REFUSED = r"refused to download from {}: a {} address \(if this is your own server"

CASES = [
    Case(
        "scheme-javascript-text",
        "link",
        _text_link("javascript:alert(document.cookie)"),
        message="neither a download link",
    ),
    Case(
        "scheme-javascript-href",
        "link",
        _html_link("javascript:fetch('https://10.0.0.1/')"),
        message="neither a download link",
    ),
    Case(
        "scheme-file-href",
        "link",
        _html_link("file:///etc/passwd"),
        message="neither a download link",
    ),
    Case(
        "scheme-ftp-text",
        "link",
        _text_link("ftp://127.0.0.1/export.csv"),
        message="neither a download link",
    ),
    Case(
        "scheme-data-href",
        "link",
        _html_link("data:text/csv;base64,aWQKMQo="),
        message="neither a download link",
    ),
    Case(
        "address-127.0.0.1",
        "link",
        _fixture_link("127.0.0.1"),
        message=REFUSED.format(r"127\.0\.0\.1", "loopback"),
    ),
    Case(
        "address-localhost-name",
        "link",
        _fixture_link("localhost"),
        message=REFUSED.format(r"localhost \(127\.0\.0\.1\)", "loopback"),
    ),
    Case(
        "address-decimal-ip",
        "link",
        _fixture_link("2130706433"),
        message=r"refused to download from 2130706433 \(127\.0\.0\.1\): a loopback address",
    ),
    Case(
        "address-userinfo-trick",
        "link",
        _fixture_link("itrp.com@127.0.0.1"),
        message=REFUSED.format(r"127\.0\.0\.1", "loopback"),
    ),
    Case(
        "address-ipv6-loopback",
        "link",
        _text_link("https://[::1]:8443/5-9-x.csv"),
        message=r"refused to download from ::1: a loopback address",
    ),
    Case(
        "address-ipv4-mapped-ipv6",
        "link",
        _text_link("https://[::ffff:127.0.0.1]/5-9-x.csv"),
        message=r"refused to download from ::ffff:127\.0\.0\.1: a loopback address",
    ),
    Case(
        "address-metadata",
        "link",
        _text_link("http://169.254.169.254/latest/meta-data/iam/5-9-x.csv"),
        message=r"169\.254\.169\.254: a cloud metadata address",
    ),
    Case(
        "address-private-10",
        "link",
        _text_link("https://10.0.0.1/exports/5-9-x.csv"),
        message=REFUSED.format(r"10\.0\.0\.1", "private"),
    ),
    Case(
        "address-unspecified",
        "link",
        _text_link("https://0.0.0.0/5-9-x.csv"),
        message=r"refused to download from 0\.0\.0\.0",
    ),
    Case(
        "redirect-to-private",
        "link",
        _redirect("https://10.0.0.1/5-9-x.csv"),
        message=REFUSED.format(r"10\.0\.0\.1", "private"),
    ),
    Case(
        "redirect-to-metadata",
        "link",
        _redirect("https://169.254.169.254/latest/meta-data/"),
        message=r"169\.254\.169\.254: a cloud metadata address",
    ),
    Case(
        "redirect-to-loopback",
        "link",
        _redirect("https://127.0.0.1:{port}/internal/5-9-secret.csv"),
        message=REFUSED.format(r"127\.0\.0\.1", "loopback"),
    ),
    Case(
        "redirect-to-name-resolving-to-loopback",
        "link",
        _redirect("https://2130706433:{port}/internal/5-9-secret.csv"),
        message=r"refused to download from 2130706433 \(127\.0\.0\.1\): a loopback address",
    ),
    Case(
        "redirect-to-ipv6-loopback",
        "link",
        _redirect("https://[::1]:{port}/internal/5-9-secret.csv"),
        message=r"refused to download from ::1: a loopback address",
    ),
    Case(
        "redirect-to-file",
        "link",
        _redirect("file:///etc/passwd"),
        message=r"refused a file link: only http and https",
    ),
    Case(
        "redirect-to-plain-http",
        "link",
        _redirect("http://127.0.0.1:{port}/internal/5-9-secret.csv"),
        message=r"from https to plain http",
    ),
    Case("redirect-loop", "link", _redirect_loop, message=r"more than 5 redirects"),
    Case(
        "link-name-dot-dot-encoded",
        "link",
        _served("/exports/..%2F..%2Fhostile-link.csv"),
        code=0,
        outcome="delivered",
    ),
    Case(
        "link-name-dot-dot-literal",
        "link",
        _served("/a/b/../../hostile-link.csv"),
        code=0,
        outcome="delivered",
    ),
    Case(
        "link-name-nul", "link", _served("/exports/hostile%00link.csv"), code=0, outcome="delivered"
    ),
    Case("link-name-600-chars", "link", _long_name, code=0, outcome="delivered"),
    Case("link-names-differ-by-case", "link", _names_by_case, code=0, outcome="delivered"),
]
