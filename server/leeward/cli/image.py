"""`leeward image`, for operators: build the Debian images environments run on ahead of their
first use, and list the versions in this machine's cache (docs/images.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from leeward.cli import console
from leeward.cli.errors import CliError


def image_build(
    names: Annotated[
        list[str] | None, typer.Argument(help="The images to build; all of them if none.")
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(help="Debian mirror; else $LEEWARD_DEBIAN_MIRROR, else deb.debian.org."),
    ] = None,
) -> None:
    """Build the current version of each image unless it is built already."""
    from leeward.sandbox import images

    try:
        wanted = [images.recipe(name).name for name in names or images.IMAGES]
        for name in wanted:
            if images.find(name) is not None:
                console.err().print(f"image {name}: built already")
            image = images.ensure(name, mirror=mirror, progress=console.err().print)
            console.out().print(f"{name:<10} {image.rootfs}")
    except images.ImageError as exc:
        raise CliError(exc.message, details=exc.details) from None


def image_list() -> None:
    """Each image's current version, built or not, then the older versions still kept."""
    from leeward.sandbox import images

    out = console.out()
    out.print(f"Cache: {images.cache_dir()}")
    built = images.versions()
    for name, recipe in images.IMAGES.items():
        current = next((i for i in built if i.name == name and images.is_current(i)), None)
        where = f"{current.size_bytes / 1e6:5.0f} MB  {current.rootfs}" if current else "not built"
        out.print(f"{name:<10} {recipe.digest[:16]}  {where}")
    for image in built:
        if not images.is_current(image):
            out.print(
                f"{image.name:<10} {image.digest[:16]}  {image.size_bytes / 1e6:5.0f} MB  "
                f"{image.rootfs}  (old)"
            )
