"""The fleet's TOML configuration: zone, regions and hosts, flavors, profiles, pools, lifetimes.

`leeward fleet serve --config fleet.toml`. Every field has a default suited to one laptop, so a
config file names only what differs. `default_config()` is what `leeward up` writes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leeward.common.validation import load_toml
from leeward.fleet.config_notify import IdleConfig, NotifyConfig
from leeward_protocol.fleet import (
    NAME_PATTERN,
    ContainerProfile,
    EnvironmentKind,
    Flavor,
    FlavorKind,
    Hardware,
)
from leeward_protocol.userconfig import HomePath

Name = Annotated[str, Field(pattern=NAME_PATTERN)]

LOOPBACK_RESERVED = ipaddress.ip_network("127.0.0.0/16")
"""127.0.0.0/16 belongs to the machine (127.0.0.1 and friends); regions never take it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostConfig(_Strict):
    name: Name
    cpus: int = Field(ge=1)
    memory_gib: int = Field(ge=1)
    gpus: int = Field(default=0, ge=0)

    @property
    def capacity(self) -> Hardware:
        return Hardware(cpus=self.cpus, memory_gib=self.memory_gib, gpus=self.gpus)


class RegionConfig(_Strict):
    name: Name
    display_name: str = ""
    network: ipaddress.IPv4Network = Field(
        description="Addresses for this region's environments (the local provider: a loopback "
        "range outside 127.0.0.0/16)."
    )
    hosts: list[HostConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> RegionConfig:
        if not self.display_name:
            self.display_name = self.name
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"region {self.name}: host names must be unique")
        if self.network.num_addresses < 4:
            raise ValueError(f"region {self.name}: network {self.network} is too small")
        return self


class LifetimeConfig(_Strict):
    devserver_default_hours: int = Field(default=72, ge=1)
    devserver_max_hours: int = Field(default=24 * 30, ge=1)
    container_hours: int = Field(default=36, ge=1)
    container_max_hours: int = Field(default=72, ge=1)


class ProviderConfig(_Strict):
    kind: Literal["local", "hosts"] = Field(
        default="local",
        description="'hosts': the fleet asks each host's agent (`leeward host serve`) over the "
        "host API, signed with its command key; 'local': the fleet starts environments on its "
        "own machine itself (one process: a laptop, tests).",
    )
    data_dir: Path | None = Field(
        default=None, description="Environments' homes and agent state; next to the config file."
    )
    ssh_port: int = Field(default=2222, ge=1, le=65535, description="Agents' SSH port.")
    stop_agents_on_exit: bool = Field(
        default=False,
        description="Stop every agent when the fleet stops (the embedded fleet of `leeward up`). "
        "Otherwise environments outlive a restart of the control plane, as VMs would.",
    )
    sandboxes: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Each environment in a bubblewrap sandbox of its own, under its owner's own "
        "host uid: 'on' requires it (the fleet does not start without), 'auto' where the machine "
        "allows (root, bubblewrap, user namespaces), 'off' never. Without sandboxes the fleet "
        "serves one user only (docs/operator.md).",
    )
    image_cache: Path | None = Field(
        default=None,
        description="Where images are built and kept; default: $LEEWARD_IMAGE_CACHE, else "
        "/var/cache/leeward/images (root) or ~/.cache/leeward/images.",
    )


class NetworkConfig(_Strict):
    """Where environments' addresses live. 'loopback': addresses on this machine's loopback
    (no root needed; network faults are only modelled). 'namespaces': the local fleet's fabric
    (leeward.providers.fabric; root and `ip netns`): every host a network namespace, every
    environment's address routed to its host, so moves and region cuts are real at the network
    layer. Region networks must then be outside 127.0.0.0/8 (198.18.0.0/15 is the benchmarking
    range, never routed on the internet)."""

    kind: Literal["loopback", "namespaces"] = "loopback"
    prefix: str = Field(
        default="lw",
        pattern=r"^[a-z][a-z0-9]{0,7}$",
        description="Names of the fabric's namespaces and links: PREFIX-HOST, PREFIXrN.",
    )
    transit: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("198.19.0.0/20"),
        description="Links between the hosts and the network; the fleet listens on its first "
        "address, which every host reaches.",
    )


class AuthConfig(_Strict):
    user_certificate_hours: int = Field(default=16, ge=1, le=16)


class DnsConfig(_Strict):
    """The fleet's DNS server for its zone (`ENV.REGION.ZONE`, `ENV.ZONE`), UDP and TCP."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: int = Field(default=5353, ge=0, le=65535, description="0: any free port.")
    ttl: int = Field(
        default=5, ge=0, le=3600, description="Seconds; short, so a migration shows at once."
    )


MIB = 1024 * 1024

DEFAULT_TRACKED = [
    ".bashrc",
    ".bash_profile",
    ".bash_aliases",
    ".profile",
    ".zshrc",
    ".inputrc",
    ".gitconfig",
    ".config",
    ".vscode-server/data/User/settings.json",
    ".vscode-server/data/Machine/settings.json",
]
"""What every environment's agent keeps in the profile, besides the user's `tracked_paths`."""


class ProfileStoreConfig(_Strict):
    """The users' profiles: the files that follow them to every new environment."""

    max_file_bytes: int = Field(default=1 * MIB, ge=1, description="The largest file stored.")
    max_files: int = Field(default=1000, ge=1, description="The most files in one profile.")
    max_total_bytes: int = Field(default=32 * MIB, ge=1, description="All files together.")
    history_versions: int = Field(default=50, ge=1, description="Versions kept per user.")
    max_upload_bytes: int = Field(
        default=8 * MIB, ge=64 * 1024, description="The largest upload request body."
    )
    tracked: list[HomePath] = Field(default_factory=lambda: list(DEFAULT_TRACKED))
    debounce_seconds: float = Field(
        default=0.25, gt=0, le=10, description="How long agents let a burst of edits settle."
    )
    wait_seconds: float = Field(
        default=25.0, gt=0, le=300, description="How long an agent's wait for changes is held."
    )


class FeatureConfig(_Strict):
    """A feature users name in their config.toml: a script and files, installed at provision."""

    name: Name
    description: str = ""
    kinds: list[EnvironmentKind] = Field(
        default_factory=lambda: [EnvironmentKind.DEVSERVER, EnvironmentKind.CONTAINER]
    )
    install: str = Field(description="bash, run in the home with `set -e`; must be idempotent.")
    files: dict[HomePath, str] = Field(
        default_factory=dict, description="Files written into the home before `install` runs."
    )
    timeout_seconds: float = Field(default=600.0, gt=0)


class SetupConfig(_Strict):
    package_install: str = Field(
        default='apt-get install -y --no-install-recommends "$LEEWARD_PACKAGE"',
        description="How a one-off `install = NAME` runs (bash; the package is "
        "$LEEWARD_PACKAGE). Each provider's images decide what fits.",
    )
    one_off_timeout_seconds: float = Field(default=600.0, gt=0)


class RetentionConfig(_Strict):
    """Which snapshots of a devserver's home are kept (restic's `forget --keep-*`)."""

    keep_last: int = Field(default=3, ge=1)
    keep_hourly: int = Field(default=24, ge=0)
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)


class BackupConfig(_Strict):
    """Devservers' homes backed up with restic (docs/operator.md, "Backups")."""

    enabled: bool = Field(default=True, description="Scheduled backups (on request ones too).")
    store: str | None = Field(
        default=None,
        description="Where repositories live, one per devserver under it: a directory the "
        "fleet owns outside every host (default: `backups/` beside the environments' "
        "directory), or any location restic speaks (`sftp:host:/path`, `s3:...`, `rest:...`); "
        "hosts reach it with restic themselves.",
    )
    interval_minutes: int = Field(
        default=60, ge=1, le=7 * 24 * 60, description="Each devserver's schedule by default."
    )
    check_seconds: float = Field(
        default=30.0, gt=0, description="How often the scheduler looks for backups due."
    )
    parallel: int = Field(default=2, ge=1, le=64, description="Backups run at once, fleet-wide.")
    prune_hours: float = Field(
        default=24.0, gt=0, description="How often each repository is pruned (after a backup)."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    keep_deleted_days: float = Field(
        default=14.0,
        ge=0,
        description="How long a deleted devserver's backups are kept (to restore it elsewhere).",
    )
    excludes: list[str] = Field(
        default_factory=list,
        description="Patterns never backed up, besides caches and build outputs "
        "(leeward.providers.restic.DEFAULT_EXCLUDES) and each user's own.",
    )


class FleetConfig(_Strict):
    zone: str = "leeward.test"
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=7420, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, description="How agents and clients reach the API; derived when absent."
    )
    database: str | None = Field(
        default=None,
        description="SQLAlchemy URL; a SQLite file next to the config when absent. "
        "postgresql+asyncpg://... for several replicas.",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    migration_blackout_seconds: float = Field(
        default=0.3,
        ge=0,
        le=60,
        description="How long a live migration leaves an environment's network dark.",
    )
    pool_interval_seconds: float = Field(default=2.0, gt=0)
    lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How long a replica's hold on an environment's work or on a loop lasts "
        "unless renewed (every third of it): how soon another replica takes over the work of "
        "one that died. Replicas' clocks must agree to well within it (NTP).",
    )
    reaper_interval_seconds: float = Field(default=30.0, gt=0)
    event_retention_hours: float = Field(
        default=168.0, gt=0, description="How long the event stream can be resumed from."
    )
    event_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often streams look for events that other replicas wrote.",
    )
    lifetimes: LifetimeConfig = Field(default_factory=LifetimeConfig)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    regions: list[RegionConfig] = Field(min_length=1)
    flavors: list[Flavor] = Field(min_length=1)
    profiles: list[ContainerProfile] = Field(default_factory=list)
    profile_store: ProfileStoreConfig = Field(default_factory=ProfileStoreConfig)
    features: list[FeatureConfig] = Field(default_factory=list)
    setup: SetupConfig = Field(default_factory=SetupConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    idle: IdleConfig = Field(default_factory=IdleConfig)

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        labels = value.strip(".").split(".")
        if not all(labels) or any(len(label) > 63 for label in labels):
            raise ValueError("must be a DNS name such as leeward.test")
        return value.strip(".").lower()

    @model_validator(mode="after")
    def _check(self) -> FleetConfig:
        for what, names in (
            ("region", [r.name for r in self.regions]),
            ("host", [h.name for r in self.regions for h in r.hosts]),
            ("flavor", [f.name for f in self.flavors]),
            ("profile", [p.name for p in self.profiles]),
            ("feature", [f.name for f in self.features]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        nets = [r.network for r in self.regions]
        for i, a in enumerate(nets):
            if a.overlaps(LOOPBACK_RESERVED):
                raise ValueError(
                    f"region {self.regions[i].name}: network {a} overlaps 127.0.0.0/16, which "
                    "belongs to this machine; use a range such as 127.101.0.0/16"
                )
            for b in nets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"region networks {a} and {b} overlap")
            if self.network.kind == "namespaces":
                if a.overlaps(ipaddress.IPv4Network("127.0.0.0/8")):
                    raise ValueError(
                        f"region {self.regions[i].name}: network {a} is loopback, which the "
                        "kernel does not route to a host's namespace; with network.kind = "
                        '"namespaces" use a range such as 198.18.1.0/24'
                    )
                if a.overlaps(self.network.transit):
                    raise ValueError(
                        f"region {self.regions[i].name}: network {a} overlaps the network's "
                        f"transit range {self.network.transit}"
                    )
        return self

    def region(self, name: str) -> RegionConfig | None:
        return next((r for r in self.regions if r.name == name), None)

    def flavor(self, name: str) -> Flavor | None:
        return next((f for f in self.flavors if f.name == name), None)

    def profile(self, name: str) -> ContainerProfile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def feature(self, name: str) -> FeatureConfig | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def backup_store(self) -> str:
        """Where the devservers' repositories are (`backup.store`, or its default)."""
        if self.backup.store is not None:
            return self.backup.store.rstrip("/")
        assert self.provider.data_dir is not None
        return str(self.provider.data_dir.parent / "backups")


class ConfigError(Exception):
    """The config file is missing or invalid; the message says where and what."""


def load_config(path: Path) -> FleetConfig:
    missing = "; write one or run `leeward up`"
    config = load_toml(path, FleetConfig, ConfigError, missing=missing)
    base = path.resolve().parent
    if config.provider.data_dir is None:
        config.provider.data_dir = base / "environments"
    elif not config.provider.data_dir.is_absolute():
        config.provider.data_dir = base / config.provider.data_dir
    if config.database is None:
        config.database = f"sqlite+aiosqlite:///{base / 'fleet.db'}"
    store = config.backup.store
    if store is not None and ":" not in store.split("/")[0] and not Path(store).is_absolute():
        config.backup.store = str(base / store)
    return config


def default_config() -> FleetConfig:
    """Three regions of three hosts, sized for one laptop: the embedded fleet of `leeward up`."""
    regions = []
    for index, (name, display) in enumerate(
        [("us-east", "US East"), ("eu-west", "EU West"), ("ap-south", "AP South")]
    ):
        regions.append(
            RegionConfig(
                name=name,
                display_name=display,
                network=ipaddress.IPv4Network(f"127.{101 + index}.0.0/16"),
                hosts=[
                    HostConfig(
                        name=f"{name}-h{n}", cpus=64, memory_gib=256, gpus=2 if n == 3 else 0
                    )
                    for n in (1, 2, 3)
                ],
            )
        )
    hw = Hardware
    flavors = [
        Flavor(
            name="small",
            kind=FlavorKind.VM,
            description="2 vCPU, 8 GiB",
            hardware=hw(cpus=2, memory_gib=8),
        ),
        Flavor(
            name="medium",
            kind=FlavorKind.VM,
            description="4 vCPU, 16 GiB",
            hardware=hw(cpus=4, memory_gib=16),
        ),
        Flavor(
            name="large",
            kind=FlavorKind.VM,
            description="8 vCPU, 32 GiB",
            hardware=hw(cpus=8, memory_gib=32),
        ),
        Flavor(
            name="xlarge",
            kind=FlavorKind.VM,
            description="16 vCPU, 64 GiB",
            hardware=hw(cpus=16, memory_gib=64),
        ),
        Flavor(
            name="physical",
            kind=FlavorKind.PHYSICAL,
            description="A whole machine",
            hardware=hw(cpus=64, memory_gib=256),
        ),
        Flavor(
            name="gpu",
            kind=FlavorKind.GPU,
            description="8 vCPU, 64 GiB, 1 GPU",
            hardware=hw(cpus=8, memory_gib=64, gpus=1),
        ),
    ]
    profiles = [
        ContainerProfile(
            name="web",
            description="Node, Python, the web monorepo",
            tools=["node", "python", "ruff"],
            hardware=hw(cpus=4, memory_gib=8),
            warm_pool=1,
            image="web",
        ),
        ContainerProfile(
            name="android",
            description="Android SDK and emulator tools",
            tools=["java", "gradle", "adb"],
            hardware=hw(cpus=8, memory_gib=16),
        ),
        ContainerProfile(
            name="ios",
            description="Swift toolchain and the iOS repository",
            tools=["swift", "xcodegen"],
            hardware=hw(cpus=8, memory_gib=16),
        ),
        ContainerProfile(
            name="jupyter",
            description="Jupyter with the data stack",
            tools=["python", "jupyter", "numpy"],
            hardware=hw(cpus=4, memory_gib=16),
            image="jupyter",
        ),
        ContainerProfile(
            name="jupyter-gpu",
            description="Jupyter on one GPU",
            tools=["python", "jupyter", "torch"],
            hardware=hw(cpus=8, memory_gib=64, gpus=1),
            image="jupyter",
        ),
    ]
    features = [
        FeatureConfig(
            name="git-defaults",
            description="Git: `main` for new repositories, and a global ignore list.",
            files={".config/git/ignore": ".DS_Store\n*.swp\n*~\n.direnv/\n.venv/\n__pycache__/\n"},
            install=(
                "command -v git >/dev/null || { echo 'git is not installed here'; exit 1; }\n"
                "git config --global init.defaultBranch main\n"
                'echo "init.defaultBranch=$(git config --global init.defaultBranch)"\n'
            ),
            timeout_seconds=60,
        ),
        FeatureConfig(
            name="prompt",
            description="A bash prompt with the environment's name and the git branch.",
            files={".config/leeward-prompt/prompt.sh": PROMPT_SCRIPT},
            install=(
                "line='[ -f ~/.config/leeward-prompt/prompt.sh ] && "
                ". ~/.config/leeward-prompt/prompt.sh'\n"
                "touch .bashrc\n"
                'grep -qxF "$line" .bashrc || printf \'%s\\n\' "$line" >> .bashrc\n'
            ),
            timeout_seconds=60,
        ),
        FeatureConfig(
            name="tmux-defaults",
            description="tmux: mouse on, 50 000 lines of history, windows numbered from 1.",
            files={
                ".config/tmux/tmux.conf": "set -g mouse on\nset -g history-limit 50000\n"
                "set -g base-index 1\nsetw -g pane-base-index 1\n"
            },
            install="echo 'wrote ~/.config/tmux/tmux.conf'\n",
            timeout_seconds=60,
        ),
    ]
    return FleetConfig(regions=regions, flavors=flavors, profiles=profiles, features=features)


PROMPT_SCRIPT = r"""# Leeward's `prompt` feature: the environment's name and the git branch.
__leeward_branch() {
  local branch
  branch=$(git symbolic-ref --short -q HEAD 2>/dev/null) || return 0
  printf ' (%s)' "$branch"
}
PS1='\[\e[1;36m\]${LEEWARD_ENVIRONMENT%%.*}\[\e[0m\]:\w$(__leeward_branch)\$ '
"""


def dump_config(config: FleetConfig) -> str:
    import tomli_w

    data = config.model_dump(mode="json", exclude_none=True)
    return str(tomli_w.dumps(data))
