"""A minimal VSIX packer for the harness's probe extension (a VSIX is a zip: the extension's
folder under `extension/`, a manifest and a content-types file). The real extension is packaged
by its own `npm run package`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

CONTENT_TYPES = """<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension=".json" ContentType="application/json"/>
<Default Extension=".js" ContentType="application/javascript"/>
<Default Extension=".vsixmanifest" ContentType="text/xml"/>
</Types>
"""

MANIFEST = """<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">
  <Metadata>
    <Identity Language="en-US" Id="{name}" Version="{version}" Publisher="{publisher}"/>
    <DisplayName>{display}</DisplayName>
    <Description xml:space="preserve">{description}</Description>
    <Properties>
      <Property Id="Microsoft.VisualStudio.Code.Engine" Value="{engine}"/>
    </Properties>
  </Metadata>
  <Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation>
  <Dependencies/>
  <Assets>
    <Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json"
           Addressable="true"/>
  </Assets>
</PackageManifest>
"""


def pack(source: Path, target: Path) -> str:
    """Zip the extension folder `source` into the VSIX `target`; returns `publisher.name`."""
    meta = json.loads((source / "package.json").read_text())
    manifest = MANIFEST.format(
        name=escape(meta["name"]),
        version=escape(meta["version"]),
        publisher=escape(meta["publisher"]),
        display=escape(meta.get("displayName", meta["name"])),
        description=escape(meta.get("description", "")),
        engine=escape(meta["engines"]["vscode"]),
    )
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as vsix:
        vsix.writestr("[Content_Types].xml", CONTENT_TYPES)
        vsix.writestr("extension.vsixmanifest", manifest)
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                vsix.write(path, f"extension/{path.relative_to(source).as_posix()}")
    return f"{meta['publisher']}.{meta['name']}"
