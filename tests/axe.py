"""axe-core, the accessibility checker, run inside a Playwright page.

The script comes from the npm registry's tarball of one pinned version, checked against the
registry's sha512 integrity and kept in var/cache/ so later runs need no network (no npm either:
urllib and tarfile). The console's Content-Security-Policy (default-src 'self') refuses inline
scripts, so pages checked with axe come from a context made with bypass_csp=True.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

from playwright.sync_api import Page

from tests.harness import ROOT

VERSION = "4.14.1"
# The "integrity" of https://registry.npmjs.org/axe-core/4.14.1 (dist.integrity).
INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{VERSION}.tgz"
CACHE = ROOT / "var" / "cache" / f"axe-core-{VERSION}"

# The impacts that fail a page; "minor" and "moderate" findings are left to review.
FAILING_IMPACTS = ("serious", "critical")


class AxeUnavailable(RuntimeError):
    """axe-core could not be fetched or did not match its pinned integrity."""


def axe_source() -> str:
    """The text of axe.min.js, fetched once into var/cache/ and checked against the pinned sha512."""
    script = CACHE / "axe.min.js"
    if not script.exists():
        _fetch_into(script)
    return script.read_text(encoding="utf-8")


def _fetch_into(script: Path) -> None:
    try:
        with urllib.request.urlopen(TARBALL, timeout=60) as response:  # noqa: S310 - a fixed https URL
            tarball = response.read()
    except OSError as err:
        raise AxeUnavailable(f"could not download {TARBALL}: {err}") from err
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != INTEGRITY:
        raise AxeUnavailable(f"{TARBALL} has integrity {digest}, expected {INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile("package/axe.min.js")
        if member is None:
            raise AxeUnavailable(f"{TARBALL} has no package/axe.min.js")
        text = member.read()
    script.parent.mkdir(parents=True, exist_ok=True)
    partial = script.with_suffix(".partial")
    partial.write_bytes(text)
    partial.replace(script)  # whole or absent, also when two test workers fetch at once


def run_axe(page: Page, *, include: list[str] | None = None, exclude: list[str] | None = None) -> list[dict]:
    """The serious and critical axe violations on the page as it is now (WCAG 2.1 A/AA and best practice).

    Each violation keeps axe's id, impact, help and, per node, its target and failure summary.
    `include` and `exclude` are CSS selectors narrowing the check (the whole document by default).
    The page's context must bypass the page's CSP (browser.new_context(bypass_csp=True)).
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source())
    result = page.evaluate(
        """async ([include, exclude]) => {
            const context = {
                include: include.length ? include.map((s) => [s]) : [document],
                exclude: exclude.map((s) => [s]),
            };
            const report = await axe.run(context, {
                runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
                resultTypes: ["violations"],
            });
            return report.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => ({ target: n.target.join(" "), summary: n.failureSummary, impact: n.impact })),
            }));
        }""",
        [include or [], exclude or []],
    )
    return [v for v in result if v["impact"] in FAILING_IMPACTS]


def describe(violations: list[dict]) -> str:
    """The violations in a few readable lines, for an assertion message."""
    lines = []
    for v in violations:
        lines.append(f"{v['impact']} {v['id']}: {v['help']}")
        for node in v["nodes"][:6]:
            summary = " ".join((node["summary"] or "").split())[:300]
            lines.append(f"    {node['target']}: {summary}")
        if len(v["nodes"]) > 6:
            lines.append(f"    … and {len(v['nodes']) - 6} more")
    return "\n".join(lines)
