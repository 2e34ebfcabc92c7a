"""Great Expectations Data Docs that work without internet.

GX 1.24's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome, Vega and more from
five CDNs, and their logo from S3 with the data context's id appended: offline (a company
network, say) they render unstyled, and the logo is a beacon. `make_offline` copies the same
versions, vendored from npm (expectations/data_docs_assets/), into the site and points every
page at them and at GX's own images, which the site already holds."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from loudou.paths import ROOT

ASSETS_DIR = ROOT / "expectations" / "data_docs_assets"
_GX_IMAGES = re.compile(
    r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)[^\"']*"
)
# GX's favicon path on validation pages is one folder short
_FAVICON = re.compile(r'href="[^"]*static/images/favicon\.ico"')
# subresource integrity asks for CORS, which a page opened from a file cannot give
_INTEGRITY = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')


def asset_map() -> dict[str, str]:
    """CDN URL -> file under ASSETS_DIR."""
    return yaml.safe_load((ASSETS_DIR / "assets.yaml").read_text("utf-8"))


def make_offline(site: Path) -> None:
    """Vendor the CDN assets into `site`/static/vendor and rewrite every page to use them."""
    assets = asset_map()
    shutil.copytree(
        ASSETS_DIR,
        site / "static" / "vendor",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("assets.yaml"),
    )
    # a URL between quotes, so that ".../vega@5" never matches inside a longer one
    cdn = re.compile("(?<=[\"'])(" + "|".join(re.escape(url) for url in assets) + ")(?=[\"'])")
    for page in site.rglob("*.html"):
        up = Path(os.path.relpath(site, page.parent)).as_posix()
        page.write_text(_pointed_home(page.read_text("utf-8"), cdn, assets, up), "utf-8")


def _pointed_home(html: str, cdn: re.Pattern, assets: dict[str, str], up: str) -> str:
    """One page with its assets at `up` (the site's root from the page's folder)."""
    root = "" if up == "." else up + "/"
    html = cdn.sub(lambda m: f"{root}static/vendor/{assets[m.group(1)]}", html)
    html = _GX_IMAGES.sub(lambda m: f"{root}static/images/{m.group(1)}", html)
    html = _INTEGRITY.sub("", html)
    return _FAVICON.sub(f'href="{root}static/images/favicon.ico"', html)
