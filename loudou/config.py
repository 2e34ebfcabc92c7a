"""loudou.yaml: load, expand secrets from the environment, validate with one line per mistake."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from loudou.errors import ConfigError

_ENV_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"
        ) from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


class Stage(_Strict):
    name: str = Field(min_length=1)
    probability: float = Field(ge=0, le=1)
    stall_days: int | None = Field(default=None, gt=0)
    required: bool = False
    # expected conversion to the next stage; without it a stage is compared with its own past
    benchmark_rate: float | None = Field(default=None, ge=0, le=1)


class Pipeline(_Strict):
    name: str = Field(min_length=1)
    stages: list[Stage] = Field(min_length=1)
    won_stage: str
    lost_stage: str
    qualified_stage: str

    @field_validator("stages")
    @classmethod
    def _unique_stage_names(cls, stages: list[Stage]) -> list[Stage]:
        first_seen: dict[str, int] = {}
        for position, stage in enumerate(stages):
            if stage.name in first_seen:
                raise ValueError(
                    f"duplicate stage name {stage.name!r} at positions "
                    f"{first_seen[stage.name]} and {position}"
                )
            first_seen[stage.name] = position
        return stages

    @model_validator(mode="after")
    def _terminal_and_qualified_stages(self) -> Pipeline:
        open_names = [s.name for s in self.stages]
        if self.won_stage in open_names or self.lost_stage in open_names:
            raise ValueError("won_stage and lost_stage must not be listed among the open stages")
        if self.won_stage == self.lost_stage:
            raise ValueError("won_stage and lost_stage must differ")
        if self.qualified_stage not in open_names:
            raise ValueError(
                f"qualified_stage {self.qualified_stage!r} is not one of the stages: "
                + ", ".join(open_names)
            )
        return self

    @property
    def open_stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


class Source(_Strict):
    kind: Literal["native", "odoo", "suitecrm", "salesforce", "hubspot"] = "native"
    url: str
    timezone: TimeZoneName = "UTC"
    # CRM stage name -> configured stage name, for CRMs whose stage names differ
    stage_mapping: dict[str, str] = Field(default_factory=dict)
    # team id -> user id of its manager (who gets the team's digest), for CRMs that name no
    # team managers (HubSpot) or to override the CRM's
    team_managers: dict[str, str] = Field(default_factory=dict)
    # the URL as loudou.yaml writes it (relative paths, ${VARS}): what names the source's
    # watermarks, so that they survive moving the project folder
    _as_written: str = PrivateAttr(default="")

    @property
    def key(self) -> str:
        return redact_url(self._as_written or self.url)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _check_size(value: str | None) -> str | None:
    if value is not None and not _SIZE.fullmatch(value.strip()):
        raise ValueError(f"a size such as 2GB or 512MiB, not {value!r}")
    return value


class Warehouse(_Strict):
    url: str = "duckdb:///warehouse.duckdb"
    # a DuckDB warehouse works within memory_limit and spills to temp_directory beyond it
    # (DuckDB's defaults: 80 % of the machine's memory, next to the warehouse file)
    memory_limit: Annotated[str | None, AfterValidator(_check_size)] = None
    temp_directory: str | None = None

    def engine_settings(self, base_dir: Path) -> dict[str, str]:
        chosen = {"memory_limit": self.memory_limit, "temp_directory": self.temp_directory}
        if chosen["temp_directory"]:
            chosen["temp_directory"] = str((base_dir / chosen["temp_directory"]).resolve())
        return {name: value for name, value in chosen.items() if value}


class Extract(_Strict):
    # late commits: re-read rows updated this long before the last watermark
    overlap_minutes: int = Field(default=60, ge=0)


class Thresholds(_Strict):
    no_activity_days: int = Field(default=21, gt=0)
    close_date_pushes: int = Field(default=3, gt=0)
    # a deal won this soon after its creation was likely worked outside the CRM
    quick_win_days: int = Field(default=7, ge=0)
    # an account its owner has not worked for this many days goes to the public pool (公海)
    public_pool_days: int = Field(default=30, gt=0)


class Quality(_Strict):
    """What the data-quality gate accepts, and when it stops a run instead of quarantining."""

    # currencies an amount may be in; by default only the reporting currency
    currencies: list[str] | None = None
    max_amount: float = Field(default=1e10, gt=0)
    # clocks differ: a timestamp this far in the future, or history this far before the
    # deal's creation, is still accepted
    future_tolerance_hours: float = Field(default=24, ge=0)
    history_tolerance_hours: float = Field(default=24, ge=0)
    # more than this share of a table's rows failing stops the run (a broken extraction,
    # not a few bad rows)
    max_failing_share: float = Field(default=0.05, gt=0, le=1)
    # ... unless fewer rows than this fail: a handful of bad rows never stop a run
    min_failing_rows: int = Field(default=10, ge=1)
    # a table that had at least this many rows must not come back empty
    min_rows_before_empty_is_an_error: int = Field(default=10, ge=1)


class Forecast(_Strict):
    """How the historical and Monte Carlo forecasts learn from closed deals."""

    window_days: int = Field(default=365, gt=0)
    # how many deals' worth of weight the configured stage probability keeps
    prior_strength: float = Field(default=20, ge=0)
    draws: int = Field(default=2000, ge=100)
    # closed months whose forecasts are replayed from history, so that each method's accuracy
    # is known from the first night (0: none)
    backtest_months: int = Field(default=6, ge=0, le=36)


class Territory(_Strict):
    """When a rep counts as over- or under-loaded and when rebalancing may stop."""

    tolerance: float = Field(default=0.25, gt=0, lt=1)
    target_cv: float = Field(default=0.25, gt=0)
    protected_probability: float = Field(default=0.75, gt=0, le=1)


class Runner(_Strict):
    """Where a backfill builds its days: worker processes on this machine (the run's own
    process when `workers` is 1), or a Dask cluster (local or remote)."""

    kind: Literal["local", "dask"] = "local"
    # days built at once; each worker holds a copy of the canonical state
    workers: int = Field(default=2, gt=0)
    # a nightly's pandas tables one after another (1) or two at once (2: faster, more memory)
    nightly_threads: int = Field(default=1, ge=1, le=2)
    # a running Dask scheduler, e.g. tcp://10.0.0.5:8786; without it a local cluster starts
    address: str | None = None


class Analysis(_Strict):
    """How far back the conversion and sales-metric marts look, and when to raise alarms."""

    weeks: int = Field(default=12, gt=0)
    months: int = Field(default=12, gt=0)
    quarters: int = Field(default=6, gt=0)
    bottleneck_alpha: float = Field(default=0.05, gt=0, lt=1)
    weekly_drop: float = Field(default=0.15, gt=0, le=1)
    # weeks of pipeline movement each run rebuilds (the week to date and the ones before)
    movement_weeks: int = Field(default=2, gt=0)


class Smtp(_Strict):
    host: str = "localhost"
    port: int = Field(default=587, gt=0, lt=65536)
    # starttls (port 587), ssl (implicit TLS, port 465) or none (a relay on a trusted network)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    # the name of the environment variable that holds the password, never the password
    password_env: str | None = None
    timeout_seconds: float = Field(default=10, gt=0)
    retries: int = Field(default=3, ge=0)
    retry_delay_seconds: float = Field(default=5, ge=0)
    # recipients in a row whose mail found no server before the run gives up (the outbox
    # keeps the rest for the next run)
    give_up_after: int = Field(default=3, ge=1)


class Digest(_Strict):
    language: Literal["en", "zh-CN"] = "zh-CN"
    sender: str = "loudou@localhost"
    smtp: Smtp = Field(default_factory=Smtp)
    # how many stalled deals each digest lists
    top_n: int = Field(default=10, gt=0)
    # the director's digest covers every team; by default it goes to whoever the team
    # managers report to
    director_email: str | None = None
    # a link into the CRM for each deal, e.g. https://crm.example.com/deals/{opportunity_id}
    crm_url_template: str | None = None
    # each rep's follow-up list (mart_follow_up) by mail every morning: opt-in
    follow_up_mail: bool = False


class Webhook(_Strict):
    """A chat group's incoming webhook that also receives the conversion alerts."""

    kind: Literal["slack", "dingtalk", "wecom"]
    # the webhook's URL; its token is a secret: write ${VAR} for it (expanded when sending)
    url: str
    # the name of the environment variable holding DingTalk's signing secret, if the robot
    # signs its requests
    secret_env: str | None = None


_QUIET_HOURS = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$")


def _check_quiet_hours(value: str | None) -> str | None:
    if value is not None and not _QUIET_HOURS.match(value):
        raise ValueError(f"{value!r} is not a span of the day like 22:00-08:00")
    return value


class Alerts(_Strict):
    """Alerts when a stage's conversion turns anomalous or a new bottleneck appears
    (mart_conversion_alert): opt-in, to each team's manager and the director by mail, and to
    a chat group by `webhook`."""

    conversion: bool = False
    # alerts raised in these hours (the reporting time zone) wait until they end
    quiet_hours: Annotated[str | None, AfterValidator(_check_quiet_hours)] = "22:00-08:00"
    webhook: Webhook | None = None


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")


def _check_cron(value: str) -> str:
    # the shape only: Prefect parses the expression itself when it registers the schedule
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday)")
    return value


CronExpression = Annotated[str, AfterValidator(_check_cron)]


class Schedules(_Strict):
    """When `loudou serve` (and prefect.yaml's deployments) run the flows, in `timezone`."""

    nightly: CronExpression = "0 2 * * *"
    digest: CronExpression = "0 7 * * 1"
    # the follow-up mails, when digest.follow_up_mail is on: working days' mornings
    follow_up: CronExpression = "30 7 * * 1-5"
    # the conversion alerts, when alerts.conversion is on: after the nightly and quiet hours
    alerts: CronExpression = "0 8 * * *"


class Settings(_Strict):
    source: Source
    warehouse: Warehouse = Field(default_factory=Warehouse)
    timezone: TimeZoneName = "UTC"
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    pipelines: list[Pipeline] = Field(min_length=1)
    extract: Extract = Field(default_factory=Extract)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    analysis: Analysis = Field(default_factory=Analysis)
    territory: Territory = Field(default_factory=Territory)
    quality: Quality = Field(default_factory=Quality)
    forecast: Forecast = Field(default_factory=Forecast)
    runner: Runner = Field(default_factory=Runner)
    digest: Digest = Field(default_factory=Digest)
    alerts: Alerts = Field(default_factory=Alerts)
    schedules: Schedules = Field(default_factory=Schedules)

    @field_validator("pipelines")
    @classmethod
    def _unique_pipeline_names(cls, pipelines: list[Pipeline]) -> list[Pipeline]:
        names = [p.name for p in pipelines]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate pipeline name {duplicates[0]!r}")
        return pipelines

    def pipeline(self, name: str | None = None) -> Pipeline:
        if name is None:
            return self.pipelines[0]
        return next(p for p in self.pipelines if p.name == name)


def expand_env(value: str, key: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{key}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_PLACEHOLDER.sub(substitute, value)


# query parameters that carry a secret (libpq's and the drivers' names)
_SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "pass", "sslpassword", "secret", "token"}
_USERINFO_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_QUERY_SECRET = re.compile(
    r"([?&](?:" + "|".join(sorted(_SECRET_QUERY_KEYS)) + r")=)[^&]*", re.IGNORECASE
)


def mask_secrets(text: str) -> str:
    """Any text with URLs in it, its passwords (user info or query) replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", text))


def _resolve_url(raw: str, key: str, base_dir: Path) -> str:
    """Refuse literal passwords, expand ${VARS}, and make file paths relative to the config."""
    try:
        parsed = make_url(raw)
    except Exception:
        raise ConfigError(f"{key}: not a database URL: {mask_secrets(raw)!r}") from None
    secrets = [parsed.password] + [
        value
        for name, values in parsed.query.items()
        if name.lower() in _SECRET_QUERY_KEYS
        for value in ([values] if isinstance(values, str) else values)
    ]
    if any(s and not _ENV_PLACEHOLDER.fullmatch(str(s)) for s in secrets):
        raise ConfigError(
            f"{key}: the password must come from the environment, "
            "e.g. postgresql+psycopg://user:${LOUDOU_SOURCE_PASSWORD}@host/db"
        )
    url = expand_env(raw, key)
    if url.startswith(("sqlite:///", "duckdb:///")):
        scheme, path = url.split(":///", 1)
        if path and path != ":memory:" and not Path(path).is_absolute():
            url = f"{scheme}:///{(base_dir / path).resolve()}"
    return url


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at the parent of `loc`, to list them next to an unknown key."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ())
        model = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if model is None:
            return []
    return list(model.model_fields)


def _format(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = _location(loc) or "loudou.yaml"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc))
        return f"{where}: unknown key (allowed here: {allowed})"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    if error["type"] == "literal_error":
        expected = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{where}: {error['input']!r} is not allowed; use one of: {expected}"
    message = error["msg"].removeprefix("Value error, ")
    return (
        f"{where}: {message} (got {error['input']!r})"
        if error["type"] != "value_error"
        else f"{where}: {message}"
    )


def parse_settings(data: Any, base_dir: Path = Path(".")) -> Settings:
    if not isinstance(data, dict):
        raise ConfigError("loudou.yaml: expected a mapping of keys at the top level")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format(e) for e in exc.errors())) from None
    source = settings.source.model_copy(
        update={"url": _resolve_url(settings.source.url, "source.url", base_dir)}
    )
    source._as_written = settings.source.url
    warehouse_url = _resolve_url(settings.warehouse.url, "warehouse.url", base_dir)
    engine = settings.warehouse.engine_settings(base_dir)
    if engine and not warehouse_url.startswith("duckdb:///"):
        raise ConfigError(
            f"warehouse.{next(iter(engine))}: applies to a DuckDB warehouse only "
            "(PostgreSQL is tuned on its server)"
        )
    if engine:  # carried in the URL, which is what every part that opens the warehouse gets
        warehouse_url += "?" + urlencode(engine)
    warehouse = settings.warehouse.model_copy(update={"url": warehouse_url})
    return settings.model_copy(update={"source": source, "warehouse": warehouse})


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (copy loudou.example.yaml to start)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_settings(data, path.parent.resolve())


def redact_url(url: str) -> str:
    """A URL safe for logs and error messages."""
    try:
        return mask_secrets(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return "<unparseable url>"
