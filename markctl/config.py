"""Controller configuration: ``markctl.toml``, environment, flags — in that order of precedence, lowest first.

``markctl.toml`` is read from the current directory, else from ``$XDG_CONFIG_HOME/markctl/``
(``~/.config/markctl/``)::

    [records]
    url = "sqlite:///records/markctl.db"    # or a path; PostgreSQL URLs work too

    [machines.laser]                         # named machines
    address = "sim://grbl-1.1"
    [machines.peen]
    address = "peen+modbus-tcp://10.0.0.7:502?unit=1"
    profile = "peen-modbus"

    [defaults]
    machine = "laser"
    operator = "armourer-1"
    mark_profile = "iti-import"              # for manifests without a mark_profile column

    [service]                                # markctl serve (docs/service.md)
    keep_finished_jobs = 200

Environment: ``MARKCTL_CONFIG`` (a file), ``MARKCTL_RECORDS`` (records URL or path),
``MARKCTL_MACHINE`` (a machine name or address), ``MARKCTL_OPERATOR``. An explicit argument
(a CLI flag) beats them all.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from markctl.errors import ConfigError

__all__ = ["MachineEntry", "ServiceSection", "Settings", "config_path", "load_settings"]

DEFAULT_RECORDS = Path.home() / ".local" / "share" / "markctl" / "records.db"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineEntry(_Model):
    address: str = Field(description="Machine address, e.g. grbl+serial:///dev/ttyUSB0?baud=115200.")
    profile: str | None = Field(default=None, description="Firmware profile id (not needed for sim://).")


class RecordsSection(_Model):
    url: str = ""


class DefaultsSection(_Model):
    machine: str | None = None
    operator: str | None = None
    mark_profile: str | None = Field(default=None, description="Rule profile for manifests without one.")


class ServiceSection(_Model):
    """``[service]``: limits of ``markctl serve`` (docs/service.md)."""

    event_window: int = Field(default=1000, ge=10, le=1_000_000, description="Events kept per job.")
    keep_finished_jobs: int = Field(default=200, ge=0, description="Finished jobs kept in memory.")
    keep_finished_s: float = Field(default=3600.0, ge=0, description="Seconds a finished job is kept.")
    token_max_age_days: float = Field(
        default=90.0, ge=0, description="Tokens older than this are refused; 0: never."
    )
    auth_failures_per_minute: int = Field(default=10, ge=1, description="Failed authentications per client.")
    shutdown_grace_s: float = Field(default=10.0, gt=0, description="Longest wait for clients at shutdown.")


class Settings(_Model):
    records: RecordsSection = RecordsSection()
    machines: dict[str, MachineEntry] = Field(default_factory=dict)
    defaults: DefaultsSection = DefaultsSection()
    service: ServiceSection = ServiceSection()
    source: str | None = Field(default=None, exclude=True)

    def records_location(self, explicit: str | None = None) -> str:
        """Where the records live: flag > MARKCTL_RECORDS > markctl.toml > the per-user default."""
        return explicit or os.environ.get("MARKCTL_RECORDS") or self.records.url or str(DEFAULT_RECORDS)

    def machine_name(self, explicit: str | None = None) -> str:
        """Which machine (a name or an address): flag > MARKCTL_MACHINE > [defaults] machine."""
        name = explicit or os.environ.get("MARKCTL_MACHINE") or self.defaults.machine
        if not name:
            raise ConfigError(
                "no machine given", hint="pass --machine NAME|ADDRESS or set [defaults] machine"
            )
        return name

    def machine(self, explicit: str | None = None) -> MachineEntry:
        """A machine by name or address, chosen as :meth:`machine_name` says."""
        name = self.machine_name(explicit)
        if name in self.machines:
            return self.machines[name]
        if "://" in name:
            return MachineEntry(address=name)
        known = ", ".join(sorted(self.machines)) or "none configured"
        raise ConfigError(
            f"unknown machine {name!r} (known: {known}); an address like sim://grbl-1.1 works too"
        )

    def operator(self, explicit: str | None = None) -> str:
        who = explicit or os.environ.get("MARKCTL_OPERATOR") or self.defaults.operator
        if not who:
            raise ConfigError("who is marking? every record names its operator", hint="pass --operator NAME")
        return who


def _candidates() -> list[Path]:
    if os.environ.get("MARKCTL_CONFIG"):
        return [Path(os.environ["MARKCTL_CONFIG"])]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path.cwd() / "markctl.toml", xdg / "markctl" / "markctl.toml"]


def config_path(settings: Settings | None = None) -> Path:
    """The file ``machines add|remove`` edits: the one in use, else ``MARKCTL_CONFIG``, else ./markctl.toml."""
    if settings is not None and settings.source:
        return Path(settings.source)
    if os.environ.get("MARKCTL_CONFIG"):
        return Path(os.environ["MARKCTL_CONFIG"])
    return Path.cwd() / "markctl.toml"


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the first configuration file that exists (or ``path``); none at all is fine."""
    candidates = [Path(path)] if path is not None else _candidates()
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text("utf-8"))
                return Settings.model_validate({**data, "source": str(candidate)})
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: not valid TOML: {exc}") from exc
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise ConfigError(f"{candidate}: {loc}: {err['msg']}") from None
        elif path is not None or os.environ.get("MARKCTL_CONFIG"):
            raise ConfigError(f"{candidate}: no such configuration file")
    return Settings()
