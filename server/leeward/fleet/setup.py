"""What a new environment installs for its owner, from their config.toml and the catalog.

In order: the features they named that support the environment's kind, their one-offs, then
their dotfiles repository. The agent runs each after the environment is ready, so none of them
holds it back; a step's digest changes when what it would do changes, and only then does an
agent run it again.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from leeward.fleet.config import FleetConfig
from leeward_protocol.fleet import EnvironmentKind, SetupKind
from leeward_protocol.profile import SetupStep
from leeward_protocol.userconfig import UserConfig

DOTFILES_SCRIPT = """\
target="$HOME/.dotfiles"
if [ -d "$target/.git" ]; then
  git -C "$target" pull --ff-only
else
  git clone --depth 1 {url} "$target"
fi
for installer in install.sh install bootstrap.sh bootstrap setup.sh setup; do
  if [ -x "$target/$installer" ]; then
    (cd "$target" && "./$installer")
    exit 0
  fi
done
echo "cloned into ~/.dotfiles (no install script found: nothing else ran)"
"""


def setup_steps(
    config: FleetConfig, kind: EnvironmentKind, user_config: UserConfig | None
) -> list[SetupStep]:
    if user_config is None:
        return []
    steps: list[SetupStep] = []
    for name in user_config.features:
        feature = config.feature(name)
        if feature is None or kind not in feature.kinds:
            # Unknown or unsupported here: the config check in the daemon names it; nothing to run.
            continue
        steps.append(
            _step(
                SetupKind.FEATURE,
                feature.name,
                feature.install,
                dict(feature.files),
                feature.timeout_seconds,
            )
        )
    for index, one_off in enumerate(user_config.one_offs, start=1):
        if one_off.run is not None:
            script = one_off.run
        else:
            assert one_off.install is not None
            script = f"export LEEWARD_PACKAGE={shlex.quote(one_off.install)}\n" + (
                config.setup.package_install
            )
        steps.append(
            _step(
                SetupKind.ONE_OFF,
                f"one-off {index}",
                script,
                {},
                config.setup.one_off_timeout_seconds,
            )
        )
    dotfiles = user_config.dotfiles
    if dotfiles is not None and dotfiles.git is not None:
        steps.append(
            _step(
                SetupKind.DOTFILES,
                "dotfiles",
                DOTFILES_SCRIPT.format(url=shlex.quote(dotfiles.git)),
                {},
                config.setup.one_off_timeout_seconds,
            )
        )
    return steps


def _step(
    kind: SetupKind, name: str, script: str, files: dict[str, str], timeout: float
) -> SetupStep:
    digest = hashlib.sha256(
        json.dumps([kind.value, name, script, sorted(files.items())]).encode()
    ).hexdigest()
    return SetupStep(
        kind=kind, name=name, script=script, files=files, digest=digest, timeout_seconds=timeout
    )


def unknown_features(config: FleetConfig, user_config: UserConfig) -> list[str]:
    """The features a config names that the catalog does not have."""
    return [name for name in user_config.features if config.feature(name) is None]
