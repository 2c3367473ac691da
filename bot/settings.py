"""The one Settings object: environment variables prefixed LIKENESS_, nested with __, and a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import OperatorError
from bot.i18n import LANGUAGES, match
from engine.budget import BudgetSettings
from engine.catalogue import BACKEND_NAMES
from engine.judge.settings import JudgeSettings
from engine.local.settings import LocalSettings
from engine.providers.settings import FalSettings, ReplicateSettings, SegmindSettings, WaveSpeedSettings
from engine.safety.classifier import DEFAULT_MODEL as SAFETY_MODEL
from engine.safety.settings import SafetySettings
from engine.settings import DispatchSettings
from storage.settings import BlobSettings, CreditSettings, QueueSettings

PLATFORMS = ("telegram", "discord")
DATABASE_URL_SHAPES = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/NAME"


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) from "host:port" or "[v6 host]:port"; None for an empty address (nothing to serve)."""
    address = address.strip()
    if not address:
        return None
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65_535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def _address(value: str) -> str:
    parse_address(value)
    return value


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    # python-telegram-bot semantics: the token is appended to both URLs.
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    webhook_url: str | None = None  # set to receive updates by webhook instead of long polling
    webhook_secret: SecretStr | None = None  # required with a webhook: Telegram sends it with every update
    # Where the webhook server binds: loopback, behind the operator's TLS-terminating reverse proxy.
    webhook_listen: str = "127.0.0.1:8443"
    # Telegram's broadcast limit: about 30 messages a second overall (more with paid broadcasts); 0: none.
    max_messages_per_s: float = Field(30, ge=0)

    _listen_shape = field_validator("webhook_listen")(_address)


class DiscordSettings(BaseModel):
    token: SecretStr | None = None
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg"
    # The operator's home servers; the admin role makes bot admins there only.
    admin_guilds: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The admin role by id: anyone can create a role with a given name in a server of their own.
    admin_role: str | None = Field(None, validate_default=True)

    @field_validator("admin_guilds", mode="before")
    @classmethod
    def _guild_ids(cls, value: Any) -> Any:
        value = _split(value)
        for entry in value if isinstance(value, list) else ():
            if not str(entry).isdigit():
                raise ValueError(f"{entry!r} is not a server id (a number)")
        return value

    @field_validator("admin_role")
    @classmethod
    def _role_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.isdigit():
            raise ValueError("must be the admin role's id (a number: Copy Role ID in Discord), not its name")
        if not info.data.get("admin_guilds"):
            raise ValueError("the admin role counts only in LIKENESS_DISCORD__ADMIN_GUILDS: set the server ids")
        return value


class Pack(BaseModel):
    """A pack of credits for sale: in Telegram Stars, and on Discord as a consumable SKU."""

    credits: int = Field(gt=0)
    stars: int | None = Field(None, gt=0, le=100_000)  # its price in Telegram Stars; None: not sold there
    discord_sku: str | None = None  # the consumable SKU that sells it on Discord

    @field_validator("discord_sku")
    @classmethod
    def _sku_id(cls, value: str | None) -> str | None:
        if value is not None and not value.isdigit():
            raise ValueError(f"{value!r} is not a SKU id (a number)")
        return value

    @property
    def payload(self) -> str:
        """The invoice payload naming this pack: checked against the packs on sale at pre-checkout."""
        return f"pack:{self.credits}:{self.stars}"


class ShopSettings(BaseModel):
    packs: list[Pack] = Field(default_factory=list, description="credit packs for sale (JSON list)")
    terms: str = ""  # the operator's terms of sale for /terms; empty: a short default
    support: str = ""  # how buyers reach the operator about a payment, for /paysupport

    @field_validator("packs")
    @classmethod
    def _distinct(cls, value: list[Pack]) -> list[Pack]:
        payloads = [pack.payload for pack in value if pack.stars is not None]
        skus = [pack.discord_sku for pack in value if pack.discord_sku]
        if len(set(payloads)) != len(payloads) or len(set(skus)) != len(skus):
            raise ValueError("two packs have the same credits and price, or the same SKU")
        return value


class MetricsSettings(BaseModel):
    address: str = "127.0.0.1:9464"  # empty: no health or metrics server

    _address_shape = field_validator("address")(_address)


class LogSettings(BaseModel):
    format: Literal["text", "json"] = "text"
    level: str = "INFO"


class DeliverySettings(BaseModel):
    # A result that fails to reach the chat for a reason that may pass is retried, with growing waits, for this
    # long after the first failure; then it is refunded. A blocked bot or a deleted chat ends it at once.
    retry_window_s: float = Field(6 * 3600, ge=0)
    retry_base_s: float = Field(5, gt=0)
    retry_cap_s: float = Field(900, gt=0)


class PrivacySettings(BaseModel):
    # Each user agrees to the privacy notice before their first face photo is stored. Off only where that
    # consent is collected outside the bot.
    consent: bool = True


class RetentionSettings(BaseModel):
    days: float = Field(30, ge=0, description="days raw photos and outputs are kept (0: forever)")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIKENESS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    database_schema: str | None = None
    # Connections per process on PostgreSQL: up to 4 x this (two engines, each with as much overflow) plus one
    # for notifications; keep processes x that under the server's max_connections.
    database_pool_size: int = Field(10, ge=1, le=100)
    route: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_identities: int = Field(10, ge=1, description="saved faces per user")
    # The language of users who chose none and whose platform names none we have (see bot/i18n.py).
    default_language: str = "en"
    # Style presets (a JSON file); unset: the presets that ship with the bot.
    styles: Path | None = None

    credits: CreditSettings = CreditSettings()
    queue: QueueSettings = QueueSettings()
    dispatch: DispatchSettings = DispatchSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    privacy: PrivacySettings = PrivacySettings()
    judge: JudgeSettings = JudgeSettings()
    safety: SafetySettings = SafetySettings()
    blobs: BlobSettings = BlobSettings()
    delivery: DeliverySettings = DeliverySettings()
    shop: ShopSettings = ShopSettings()
    budget: BudgetSettings = BudgetSettings()
    local: LocalSettings = LocalSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    fal: FalSettings = FalSettings()
    replicate: ReplicateSettings = ReplicateSettings()
    wavespeed: WaveSpeedSettings = WaveSpeedSettings()
    segmind: SegmindSettings = SegmindSettings()

    _split_route = field_validator("route", "admins", mode="before")(_split)

    @field_validator("route")
    @classmethod
    def _known_backends(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in BACKEND_NAMES]
        if unknown:
            raise ValueError(f"unknown backend {unknown[0]!r}; known: {', '.join(BACKEND_NAMES)}")
        return value

    @field_validator("default_language")
    @classmethod
    def _supported_language(cls, value: str) -> str:
        found = match(value)
        if found is None:
            raise ValueError(f"no catalog for {value!r}; languages: {', '.join(LANGUAGES)}")
        return found

    @field_validator("database_url")
    @classmethod
    def _database_url_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # The store decides what it can open; imported here so commands without a database URL skip it.
        from storage.db import normalize_url

        try:
            normalize_url(value)
        except ValueError:
            # Never echo the URL: it may carry the password.
            scheme, sep, _ = value.partition("://")
            known = scheme.partition("+")[0] in ("sqlite", "postgresql")
            if sep and not known and scheme.replace("+", "").isalnum():
                raise ValueError(f"unsupported database {scheme!r}: use {DATABASE_URL_SHAPES}") from None
            raise ValueError(f"not a database URL: use {DATABASE_URL_SHAPES}") from None
        return value

    @field_validator("admins")
    @classmethod
    def _admin_ids(cls, value: list[str]) -> list[str]:
        for entry in value:
            platform, _, user_id = entry.partition(":")
            if platform not in PLATFORMS or not user_id.strip():
                raise ValueError(f"{entry!r} is not <platform>:<user id> with platform telegram or discord")
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'likeness.db').resolve()}"

    @property
    def local_settings(self) -> LocalSettings:
        """The local engine's settings with the models directory resolved."""
        return self.local.model_copy(update={"models_dir": self.models_dir})

    @property
    def models_dir(self) -> Path:
        return self.local.models_dir or self.data_dir / "models"

    @property
    def safety_model_dir(self) -> Path:
        """The safety classifier's files: LIKENESS_SAFETY__MODEL_DIR, or where `likeness models download` puts them."""
        return self.safety.model_dir or self.models_dir / SAFETY_MODEL.target

    @property
    def blobs_dir(self) -> Path:
        """The blob directory: LIKENESS_BLOBS__URL when it names one, else blobs/ in the data directory."""
        url = self.blobs.url
        return Path(url) if url and not url.startswith("s3://") else self.data_dir / "blobs"

    def secrets(self) -> list[str]:
        """Every configured token, key and password: the log and the operator's error lines hide them."""
        found = _secret_values(self)
        password = urlsplit(self.database_url or "").password
        if password:
            found.append(password)
        return found


def _secret_values(model: BaseModel) -> list[str]:
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(_secret_values(value))
    return found


class SettingsError(OperatorError):
    """A missing or malformed setting; the message is one line naming the variable."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = "LIKENESS_" + "__".join(str(part) for part in error["loc"]).upper()
        cause = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
        raise SettingsError(f"{variable}: {cause or error['msg']}") from None
