"""The dashboard's templates and vendored scripts ship inside the package, pinned."""

from __future__ import annotations

import hashlib
from importlib.resources import files

PINNED = {
    "htmx-2.0.11.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    "htmx-ext-sse-2.2.4.min.js": "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
}


def test_vendored_scripts_are_the_pinned_files() -> None:
    static = files("keel.ui") / "static"
    for name, digest in PINNED.items():
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name
    assert (files("keel.ui") / "VENDORED.md").read_text().count("sha256") >= 2


def test_every_page_template_and_the_stylesheet_are_package_files() -> None:
    templates = files("keel.ui") / "templates"
    pages = ["base.html", "runs.html", "run.html", "queues.html", "schedules.html"]
    pages += ["workers.html", "login.html", "_rows.html", "_counts.html", "_travel.html"]
    for name in pages:
        assert (templates / name).is_file(), name
    assert (files("keel.ui") / "static" / "style.css").is_file()
