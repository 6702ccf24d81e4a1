"""The daemon's configuration: a TOML file validated by pydantic.

Every key has a default, so no file at all is a valid configuration. The models are strict
and forbid unknown keys: a config file is written by a person, and a typo such as
``wrokers = 4`` or ``settle_ms = "100"`` must fail loudly at load (or reload) time instead
of silently running with the default. Errors name the file, the dotted key path and the
reason; TOML syntax errors carry the line and column.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from thotd import exits, paths
from thotd.project.objectfile import format_loc

if TYPE_CHECKING:
    from thotd.engine.logretention import Retention
    from thotd.engine.trust import TrustPolicy

#: Exit status for "bad configuration", kept under its old name: the unit lists it in
#: ``RestartPreventExitStatus=`` so systemd does not restart-loop on a broken file.
EXIT_CONFIG = exits.CONFIG

#: Upper bounds of the intervals: a finite, sensible range (``inf`` crashed the scheduler,
#: ``1e-7`` made the reconcile scan spin), reported as configuration errors (exit 78).
MINUTES_PER_WEEK = 7 * 24 * 60
SECONDS_PER_WEEK = MINUTES_PER_WEEK * 60

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """The configuration file cannot be used; the message is meant for the user as is."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class _Section(BaseModel):
    """Strict, closed, immutable: reload swaps a whole new object in or keeps the old one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DaemonSection(_Section):
    """``[daemon]``: event handling and lifecycle."""

    settle_ms: int = Field(
        default=100, ge=0, le=60_000, description="Quiet period closing a batch of file events, in milliseconds."
    )
    stable_checks: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive looks at which a file's size and mtime must be unchanged "
        "before it is read (a half-copied file must not be analysed).",
    )
    reconcile_minutes: float = Field(
        default=10.0,
        ge=0.5,
        le=MINUTES_PER_WEEK,
        allow_inf_nan=False,
        description="Period of the full rescan that catches events the watcher missed.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="On stop, how long running scripts get after SIGTERM before SIGKILL.",
    )


class PoolSection(_Section):
    """``[pool]``: the worker pool that runs scripts."""

    workers: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Scripts run at once; 0 means the number of CPUs.",
        validate_default=True,
    )
    timeout_s: float = Field(
        default=3600.0, gt=0, le=SECONDS_PER_WEEK * 4, allow_inf_nan=False,
        description="Per-run time limit, in seconds.",
    )
    log_cap_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, le=2**40, description="Cap on each run's stdout/stderr log, in bytes."
    )
    fork: bool = Field(
        default=True,
        description="Fork Python scripts from a preloaded interpreter (a few ms per run "
        "instead of ~50); a run that could differ is exec'd as always.",
    )

    @field_validator("workers")
    @classmethod
    def _resolve_workers(cls, value: int) -> int:
        """Resolve 0 here, so consumers never see the "auto" sentinel."""
        return value or os.cpu_count() or 1


class RetrySection(_Section):
    """``[retry]``: reruns of failed scripts, with exponential backoff."""

    attempts: int = Field(default=0, ge=0, le=20, description="Extra attempts after a failure; 0 = no retry.")
    backoff_s: float = Field(
        default=30.0, ge=0, le=86_400, allow_inf_nan=False,
        description="Delay before the first retry; doubles with each further one."
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        return self.backoff_s * 2.0 ** (attempt - 1)


class LogSection(_Section):
    """``[log]``: the daemon's own log."""

    level: LogLevel = Field(default="info", description="Minimum level: debug, info, warning, error.")
    file: bool = Field(default=True, description="Also write JSON lines to the log file.")

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        """``INFO`` and ``info`` both work; only the spelling of the level matters."""
        return value.lower() if isinstance(value, str) else value


class RunLogsSection(_Section):
    """``[run_logs]``: how many run logs are kept (see :mod:`thotd.engine.logretention`).
    Not ``[log]``, which is the daemon's own log."""

    keep_per_run: int = Field(
        default=10, ge=1, le=100_000,
        description="Logs kept per run (one container and script), newest first.",
    )
    max_total_mb: int = Field(
        default=1024, ge=1, le=1024 * 1024,
        description="Cap on all run logs together, in MiB; the oldest go first.",
    )

    def retention(self) -> Retention:
        from thotd.engine.logretention import Retention

        return Retention(self.keep_per_run, self.max_total_mb * 1024 * 1024)


def _check_entries(entries: list[str]) -> list[str]:
    """Every entry must name an account that exists, so a typo fails at load time."""
    from thotd.engine.trust import parse_entry

    for entry in entries:
        parse_entry(entry)
    return entries


class ProjectTrust(_Section):
    """One ``[[trust.projects]]`` table: entries trusted below one project root."""

    root: Annotated[Path, Field(strict=False)] = Field(
        description="The project root; relative to the config file's directory, ~ expanded."
    )
    allow: list[str] = Field(description='"user:NAME" or "group:NAME" entries.')

    _entries = field_validator("allow")(_check_entries)

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        value = value.expanduser()
        if not value.is_absolute():
            value = (Path(base) if base is not None else Path.cwd()) / value
        return Path(os.path.normpath(value))


class TrustSection(_Section):
    """``[trust]``: other accounts whose files may make thotd run code (see
    :mod:`thotd.engine.trust`). By default only your own files and root's do."""

    allow: list[str] = Field(
        default_factory=list,
        description='Trusted everywhere: "user:NAME" or "group:NAME" (or a numeric id).',
    )
    projects: list[ProjectTrust] = Field(
        default_factory=list,
        description="Trusted below one project root: [[trust.projects]] tables.",
    )

    _entries = field_validator("allow")(_check_entries)

    def policy(self, *, anyone: bool = False, config_path: Path | None = None) -> TrustPolicy:
        """The run check's policy; ``anyone`` is the one-run override of ``thot run``."""
        from thotd.engine.trust import TrustPolicy

        projects: dict[str, list[str]] = {}
        for item in self.projects:
            projects.setdefault(str(item.root), []).extend(item.allow)
        return TrustPolicy.from_entries(self.allow, projects, anyone=anyone,
                                        config_path=config_path)


class WebSection(_Section):
    """``[web]``: the local dashboard (:mod:`thotd.web`), served from the daemon's loop."""

    enabled: bool = Field(default=True, description="Serve the dashboard (`thotctl web` prints its URL).")
    host: Literal["127.0.0.1", "localhost", "::1"] = Field(
        default="127.0.0.1",
        description="Loopback address to bind; other machines can never reach the page.",
    )
    port: int = Field(
        default=8771, ge=0, le=65535,
        description="TCP port; 0 picks a free one (the daemon logs and records the URL).",
    )
ClusterKind = Literal["slurm", "pbs", "sge", "lsf", "htcondor", "oar", "moab", "local"]


class ExecutorOptions(_Section):
    """Where runs execute (see :mod:`thotd.executor.choose`): this machine, or a Dask cluster
    given by its scheduler's address or started through ``dask-jobqueue``."""

    kind: Literal["local", "dask"] = Field(
        default="local", description='"local" (this machine) or "dask" (a Dask cluster).')
    scheduler: str | None = Field(
        default=None, description='Dask scheduler address, e.g. "tcp://host:8786".')
    cluster: ClusterKind | None = Field(
        default=None, description='Start a dask-jobqueue cluster instead: "slurm", "pbs", ... '
        '("local": a LocalCluster on this machine).')
    cluster_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the cluster class "
        "(e.g. queue, cores, memory, walltime, job_extra_directives).")
    adapt_min: int = Field(default=0, ge=0, le=100_000, description="Adaptive scaling: fewest workers.")
    adapt_max: int = Field(default=4, ge=1, le=100_000, description="Adaptive scaling: most workers.")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, allow_inf_nan=False,
        description="Time allowed for one connection attempt to the scheduler.")

    @field_validator("scheduler", "cluster", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """``""`` (what the example file says) means "none"."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _dask_needs_a_target(self) -> ExecutorOptions:
        if self.kind == "dask" and not (self.scheduler or self.cluster):
            raise ValueError('kind = "dask" needs scheduler = "tcp://..." or cluster = "slurm"|...')
        if self.scheduler and self.cluster:
            raise ValueError("give scheduler or cluster, not both")
        if self.adapt_min > self.adapt_max:
            raise ValueError("adapt_min is larger than adapt_max")
        return self

    def settings(self) -> dict[str, Any]:
        """What :class:`thotd.executor.choose.Executors` is handed (the local kind needs
        no options)."""
        if self.kind == "local":
            return {"kind": "local"}
        return self.model_dump(exclude={"root", "projects"})


class ProjectExecutor(ExecutorOptions):
    """One ``[[executor.projects]]`` table: the executor of one project."""

    root: Annotated[Path, Field(strict=False)] = Field(
        description="The project root; relative to the config file's directory, ~ expanded.")

    _root = field_validator("root")(ProjectTrust._absolute_root.__func__)  # type: ignore[attr-defined]


class ExecutorSection(ExecutorOptions):
    """``[executor]``: the default executor, and per-project ones."""

    projects: list[ProjectExecutor] = Field(
        default_factory=list, description="Per-project executors: [[executor.projects]] tables.")

    def for_project(self, root: str) -> dict[str, Any]:
        for item in self.projects:
            if os.path.normpath(str(item.root)) == os.path.normpath(root):
                return item.settings()
        return self.settings()


class Config(_Section):
    """The whole configuration file."""

    daemon: DaemonSection = Field(default_factory=DaemonSection)
    pool: PoolSection = Field(default_factory=PoolSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    log: LogSection = Field(default_factory=LogSection)
    run_logs: RunLogsSection = Field(default_factory=RunLogsSection)
    trust: TrustSection = Field(default_factory=TrustSection)
    web: WebSection = Field(default_factory=WebSection)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)
    projects: list[Annotated[Path, Field(strict=False)]] = Field(
        default_factory=list,
        description="Project folders registered when the daemon starts. Relative paths are "
        "taken from the config file's directory.",
    )

    @field_validator("projects")
    @classmethod
    def _absolute_projects(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        """Anchor paths so their meaning does not depend on the daemon's working directory."""
        base = (info.context or {}).get("base_dir")
        out = []
        for p in value:
            p = p.expanduser()
            if not p.is_absolute():
                p = (Path(base) if base is not None else Path.cwd()) / p
            out.append(p)
        return out


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """Field names of the section that ``loc`` (minus its last part) points into."""
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: Any) -> str:
    """One error as ``key.path: reason``, with a spelling hint for unknown keys."""
    loc = tuple(error["loc"])
    where = format_loc(loc)
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1) if loc else []
        reason = "unknown key"
        if hint:
            reason += f" (did you mean {hint[0]!r}?)"
        elif known:
            reason += f" (known keys here: {', '.join(known)})"
        return f"{where}: {reason}"
    if error["type"] in ("model_type", "dict_type"):
        return f"{where}: must be a table ([{where}] section), got {error.get('input')!r}"
    reason = error["msg"]
    if "input" in error and not isinstance(error["input"], dict | list):
        reason += f", got {error['input']!r}"
    return f"{where}: {reason}"


def parse_config(data: dict[str, Any], *, source: str, base_dir: Path | None = None) -> Config:
    """Validate already-parsed TOML; ``source`` names the file in error messages."""
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
        if len(lines) == 1:
            raise ConfigError(f"{source}: {lines[0]}") from None
        body = "\n".join(f"  {line}" for line in lines)
        raise ConfigError(f"{source}: {len(lines)} errors:\n{body}") from None


def _check_owner(file: Path) -> None:
    """Refuse a configuration another account could have written: it says what to run."""
    from thotd.engine.trust import check_config_file

    refusal = check_config_file(file)
    if refusal is not None:
        raise ConfigError(f"{file}: {refusal}", path=file)


def load_config(path: Path | None = None) -> Config:
    """Read and validate the configuration.

    ``path=None`` means ``$THOTD_CONFIG`` or the default file. A file that was named (by
    argument or environment) must exist; a missing default file gives the defaults.
    Raises ``ConfigError`` for anything unusable, never a bare ``OSError`` or pydantic error,
    so the daemon can print the message and exit with ``EXIT_CONFIG``.
    """
    explicit = path is not None or paths.config_file_is_explicit()
    file = Path(path) if path is not None else paths.config_file()
    try:
        raw = file.read_bytes()
        _check_owner(file)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{file}: configuration file not found", path=file) from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}", path=file) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {exc.start}): TOML files must be UTF-8", path=file
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # The message already ends with "(at line L, column C)".
        raise ConfigError(f"{file}: invalid TOML: {exc}", path=file) from None
    try:
        return parse_config(data, source=str(file), base_dir=file.parent.absolute())
    except ConfigError as exc:
        exc.path = file
        raise
