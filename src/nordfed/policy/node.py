"""A node's configuration and policy file (``node.yaml``): who may run what here, and within which limits.

The policy is the node's own: researcher signing keys and algorithm code hashes are pinned in it, so the node
never takes the hub's word for who asked or what code runs.

```yaml
hub_url: https://hub.example.org
api_key_env: NORDFED_NODE_API_KEY   # the api key `nordfed hub register-node` printed, read from this variable;
                                    # or api_key_file: api.key (relative to this file), or api_key: "..." itself
name: DK
cdm_url: duckdb:////data/dk.duckdb   # optional when tables are given
tables:                             # optional plain tables besides (or instead of) the CDM; paths relative
  default: rows.parquet             # to this file; .csv, .parquet or .pq; a partial picks one by name
  lung: lung.csv                    # (``dataset: lung``), the one called ``default`` when it names none
key_dir: /etc/nordfed/keys          # the node's key pairs (signing.pub is the key its ledger verifies under)
                                    # and site.secret, made on first start: it keys CV folds and time noise
state_dir: /var/lib/nordfed         # default: key_dir. Holds node.ledger, the node's audit ledger
                                    # (verify: `nordfed node ledger verify --config node.yaml`)
previous_signing_keys: []           # after replacing the key pair on purpose: the earlier signing.pub, so the
                                    # ledger's older entries still verify (the node refuses to start otherwise)
policy:
  collaborations: [1]
  organizations: [1, 2]
  researchers: [{username: alice, signing_key: "base64..."}]
  algorithms: [{name: nordfed.count, version: "1", code_hash: "sha256 hex"}]
  min_cell_count: 10
  exact_event_times: false          # true releases exact per-time survival aggregates (KM, unstratified Cox)
  event_time_noise: 0               # sd of noise this site adds to every released KM time (0 = none)
  share_error_details: true         # false: a failed run tells the researcher (and the hub) only the error's
                                    # type; the message, which may quote a value, stays in the node's log
  time_limit_s: 300
  memory_limit_mb: 4096
  secure_aggregation: [nordfed.lasso.newton]   # released only masked, for a sum over several nodes
  secure_aggregation_min_sites: 2
  privacy_budget: 5.0               # differential privacy: total ε per researcher here (tasks ask: dp: {epsilon})
  dp_required: false                # true: refuse every task that does not ask for differential privacy
```

`nordfed node init` writes a commented file of this form with every registered algorithm pinned
(:func:`node_config_template`).

Every start of the node records the sha256 of this file and of the effective policy on the ledger
(``policy_loaded``), and a ``policy_changed`` entry when the policy differs from the one last recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from nordfed.privacy.disclosure import DisclosurePolicy

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MIN_CELL_COUNT = 10
#: file suffix → format of the plain tables a node may serve
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
TableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]


class PolicyError(Exception):
    """The node configuration file is invalid; the message names the file and field."""


class PinnedResearcher(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1)
    signing_key: str = Field(min_length=40, description="base64 Ed25519 verify key")
    organization_id: int | None = None


class PinnedAlgorithm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    code_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class NodePolicy(BaseModel):
    """What this node allows. Empty ``collaborations``/``organizations`` lists allow none."""

    model_config = ConfigDict(extra="forbid")
    collaborations: list[int] = Field(default_factory=list)
    organizations: list[int] = Field(default_factory=list)
    researchers: list[PinnedResearcher] = Field(default_factory=list)
    algorithms: list[PinnedAlgorithm] = Field(default_factory=list)
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT
    #: a node may go below the default cell count only by saying so explicitly
    allow_min_cell_count_below_default: bool = False
    #: release exact per-time survival aggregates (see nordfed.fed.survival_data); strict so that a quoted
    #: "false" or a typo in the YAML cannot switch it on
    exact_event_times: bool = Field(default=False, strict=True)
    #: standard deviation of the noise the site adds to released Kaplan-Meier times (0 = none)
    event_time_noise: float = Field(default=0.0, ge=0)
    #: send a failed algorithm's own message to the researcher, as Vantage6's share_algorithm_logs does; run
    #: logs reach the hub in plain text and a library's message may quote a row's value
    share_error_details: bool = Field(default=True, strict=True)
    time_limit_s: float = Field(default=300.0, gt=0)
    memory_limit_mb: int = Field(default=4096, ge=256)
    max_task_age_s: float = Field(default=7 * 86400, gt=0)
    #: algorithms whose results this node releases only masked for a secure sum over nodes
    #: (:mod:`nordfed.privacy.secure_sum`), never on their own
    secure_aggregation: list[str] = Field(default_factory=list)
    #: the fewest nodes (this one included) such a sum may be over
    secure_aggregation_min_sites: int = Field(default=2, ge=1)
    #: differential privacy: the total ε each researcher may spend at this node (None: no limit)
    privacy_budget: float | None = Field(default=None, gt=0)
    #: refuse every task that does not ask for differential privacy (``dp: {epsilon}``)
    dp_required: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _cell_count(self) -> NodePolicy:
        if self.min_cell_count < 1:
            raise ValueError("min_cell_count must be at least 1")
        if self.min_cell_count < DEFAULT_MIN_CELL_COUNT and not self.allow_min_cell_count_below_default:
            raise ValueError(
                f"min_cell_count {self.min_cell_count} is below the default {DEFAULT_MIN_CELL_COUNT}; "
                "set allow_min_cell_count_below_default: true to mean it"
            )
        return self

    def disclosure(self) -> DisclosurePolicy:
        """The disclosure rules partials at this node run under."""
        return DisclosurePolicy(min_cell_count=self.min_cell_count, exact_event_times=self.exact_event_times,
                                event_time_noise=self.event_time_noise)

    def sha256(self) -> str:
        """Hash of the effective policy (canonical JSON, defaults included): what the ledger records."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def researcher_keys(self) -> dict[str, str]:
        return {r.username: r.signing_key for r in self.researchers}

    def check(self, run: Mapping[str, Any], signed: Mapping[str, Any], collaboration_id: int,
              local: Mapping[str, tuple[str, str]] | None = None) -> str | None:
        """Why this run may not execute here, or None when it may.

        ``run`` is what the hub says (algorithm, version, code hash); ``signed`` is the researcher-signed,
        already verified input. Both must agree and both must be allowed. ``local`` (name → (version, code hash)
        of the code this node runs) lets a refused pin say which side is out of date.
        """
        if collaboration_id not in self.collaborations:
            return f"collaboration {collaboration_id} is not allowed by this node's policy"
        for key in ("algorithm", "version", "code_hash"):
            if str(signed.get(key)) != str(run.get(key)):
                return f"signed {key} {signed.get(key)!r} does not match the hub's {run.get(key)!r}"
        pinned = next((a for a in self.algorithms if a.name == signed["algorithm"]), None)
        if pinned is None:
            return f"algorithm {signed['algorithm']!r} is not in this node's allowlist"
        if pinned.version != str(signed["version"]):
            return (f"algorithm {pinned.name} version {signed['version']!r} is not pinned (pinned: {pinned.version})"
                    + pin_hint(pinned, signed, local))
        if pinned.code_hash != signed["code_hash"]:
            return (f"algorithm {pinned.name}@{pinned.version} code hash {str(signed['code_hash'])[:12]}… is not "
                    f"pinned (pinned: {pinned.code_hash[:12]}…)" + pin_hint(pinned, signed, local))
        researcher = next(r for r in self.researchers if r.username == signed["username"])
        org = signed.get("organization_id")
        if researcher.organization_id is not None and org != researcher.organization_id:
            return (f"researcher {researcher.username} signed for organization {org}, "
                    f"pinned {researcher.organization_id}")
        if org not in self.organizations:
            return f"organization {org} is not allowed by this node's policy"
        return None


PIN_HOW = "`nordfed algorithms --json` on the node, or a fresh `nordfed node init`, then restart the node"


def pin_hint(pinned: PinnedAlgorithm, signed: Mapping[str, Any], local: Mapping[str, tuple[str, str]] | None) -> str:
    """Which side of a refused pin is out of date (the researcher's nordfed or the node's pin), and what to run:
    after an upgrade of either, the two disagree and a bare "not pinned" leaves both guessing."""
    mine = (local or {}).get(pinned.name)
    if mine is None:
        return ""
    theirs = (str(signed.get("version")), str(signed.get("code_hash")))
    if mine == theirs:
        return (f"; this node runs the researcher's code, so its node.yaml pin is older: the site reviews and pins "
                f"this nordfed's algorithms ({PIN_HOW})")
    if mine == (pinned.version, pinned.code_hash):
        return ("; this node runs the pinned code and the researcher's nordfed differs: she uses the nordfed version "
                "the site runs (or the site upgrades, then pins the new code)")
    return (f"; this node's own code ({mine[0]}, {mine[1][:12]}…) matches neither: the site pins it after upgrading "
            f"({PIN_HOW})")


def stale_pins(policy: NodePolicy, local: Mapping[str, tuple[str, str]]) -> list[str]:
    """Pinned algorithms whose version or code hash is not that of the code this node runs (every run of them
    is refused), each as one line naming both; typical after upgrading nordfed without re-pinning."""
    out = []
    for a in policy.algorithms:
        mine = local.get(a.name)
        if mine is None:
            out.append(f"{a.name}@{a.version}: not in this nordfed")
        elif mine != (a.version, a.code_hash):
            out.append(f"{a.name}: pinned {a.version} {a.code_hash[:12]}…, this nordfed has {mine[0]} {mine[1][:12]}…")
    return out


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hub_url: str = Field(pattern=r"^https?://")
    api_key: str = Field(min_length=8)
    name: str = Field(min_length=1)
    cdm_url: str | None = Field(default=None, min_length=1)
    #: plain tables served besides (or instead of) the CDM: name → CSV/Parquet file (see read_table)
    tables: dict[TableName, Path] = Field(default_factory=dict)
    key_dir: Path
    #: where the node keeps its local state: node.ledger (its audit ledger) and seen task nonces; default: key_dir
    state_dir: Path | None = None
    #: earlier signing public keys of this node, after its key pair was replaced on purpose: the older entries of
    #: its ledger verify under them (the hub keeps its own history of the node's keys)
    previous_signing_keys: list[str] = Field(default_factory=list)
    #: CA bundle to verify the hub's certificate with (default: the system's); TLS is never unverified
    tls_ca_file: Path | None = None
    poll_timeout_s: float = Field(default=30.0, gt=0, le=120)
    #: seconds the node keeps its CDM open after a task: a study's rounds reuse the connection, while an idle node
    #: leaves a DuckDB file to the site's own tools (DuckDB lets one process at a time write it)
    cdm_idle_s: float = Field(default=5.0, ge=0, le=3600)
    policy: NodePolicy = Field(default_factory=NodePolicy)
    #: (path, sha256 of its bytes) of the file this config was read from; set by load_node_config
    _source: tuple[str, str] | None = PrivateAttr(default=None)

    @field_validator("previous_signing_keys")
    @classmethod
    def _verify_keys(cls, keys: list[str]) -> list[str]:
        from nacl.encoding import Base64Encoder
        from nacl.exceptions import CryptoError
        from nacl.signing import VerifyKey

        for i, key in enumerate(keys):
            try:
                VerifyKey(key.encode("ascii"), encoder=Base64Encoder)
            except (CryptoError, ValueError, TypeError, UnicodeEncodeError):
                raise ValueError(f"entry {i}: not a base64 Ed25519 public key (as in signing.pub)") from None
        return keys

    @model_validator(mode="after")
    def _has_data(self) -> NodeConfig:
        if self.cdm_url is None and not self.tables:
            raise ValueError("a node serves a CDM (cdm_url), plain tables (tables) or both; neither is given")
        return self

    @property
    def source(self) -> tuple[str, str] | None:
        return self._source

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.key_dir

    @property
    def ledger_path(self) -> Path:
        """The node's own ledger file."""
        return self.state_path / "node.ledger"


def load_node_config(path: str | Path) -> NodeConfig:
    """Read and validate ``node.yaml``; relative paths are resolved against the file's folder."""
    p = Path(path)
    try:
        content = p.read_bytes()  # read once: the ledger records the hash of exactly what was parsed
        raw = yaml.safe_load(content.decode("utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{p}: file not found") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{p}: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{p}: expected a mapping at the top level")
    _resolve_api_key(raw, p)
    try:
        cfg = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        errs = "; ".join((f"field {'.'.join(str(x) for x in e['loc'])}: " if e["loc"] else "") + e["msg"]
                         for e in exc.errors())
        raise PolicyError(f"{p}: {errs}") from None
    base = p.resolve().parent
    updates: dict[str, Any] = {"key_dir": base / cfg.key_dir}
    for key in ("state_dir", "tls_ca_file"):
        if getattr(cfg, key) is not None:
            updates[key] = base / getattr(cfg, key)
    updates["tables"] = {name: base / path for name, path in cfg.tables.items()}
    if cfg.cdm_url:  # a relative DuckDB path, like every other path here, is relative to this file
        from nordfed.omop.store import CDMError, CDMUrl

        try:
            loc = CDMUrl.parse(cfg.cdm_url)
        except CDMError as exc:
            raise PolicyError(f"{p}: field cdm_url: {exc}") from None
        if loc.engine == "duckdb" and loc.target != ":memory:" and not Path(loc.target).is_absolute():
            query = f"?{cfg.cdm_url.split('?', 1)[1]}" if "?" in cfg.cdm_url else ""
            updates["cdm_url"] = f"duckdb:///{(base / loc.target).resolve()}{query}"
    for name, path in updates["tables"].items():
        problem = check_table(path)
        if problem is not None:
            raise PolicyError(f"{p}: field tables.{name}: {problem}")
    out = cfg.model_copy(update=updates)
    out._source = (str(p.resolve()), hashlib.sha256(content).hexdigest())
    return out


def _resolve_api_key(raw: dict[str, Any], p: Path) -> None:
    """Replace ``api_key_env`` or ``api_key_file`` by the ``api_key`` they name, so node.yaml need not hold the
    secret (it is recorded in the ledger's hash, shown in reviews and copied around)."""
    given = [k for k in ("api_key", "api_key_env", "api_key_file") if k in raw]
    if len(given) > 1:
        raise PolicyError(f"{p}: fields {' and '.join(given)}: give only one of them")
    if "api_key_env" in raw:
        var = str(raw.pop("api_key_env"))
        value = os.environ.get(var, "").strip()
        if not value:
            raise PolicyError(f"{p}: field api_key_env: environment variable {var} is not set (or empty); set it to "
                              "the api key `nordfed hub register-node` printed")
        raw["api_key"] = value
    elif "api_key_file" in raw:
        path = p.resolve().parent / str(raw.pop("api_key_file"))
        try:
            raw["api_key"] = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PolicyError(f"{p}: field api_key_file: cannot read {path}: {reason}") from None


def table_format(path: Path) -> str:
    """``csv`` or ``parquet`` by the file's suffix; ValueError for any other."""
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown table format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(TABLE_FORMATS)}")
    return fmt


def read_table(path: Path, nrows: int | None = None) -> pd.DataFrame:
    """A node's plain table as a DataFrame (the first ``nrows`` rows for a CSV probe); the one reader used by
    the node worker, the tests and the benchmarks, so every side sees the same dtypes."""
    import pandas as pd

    if table_format(path) == "csv":
        # low_memory=False: one dtype per column from the whole file, not per chunk
        return pd.read_csv(path, nrows=nrows, low_memory=False)
    return pd.read_parquet(path)


def check_table(path: Path) -> str | None:
    """Why ``path`` cannot be served as a table (missing, unreadable, unknown format), or None.

    Cheap: a Parquet file's schema or a CSV's first rows, so a node refuses to start on a bad file instead of
    failing its first run; the whole table is read once, on first use, by the worker.
    """
    try:
        fmt = table_format(path)
    except ValueError as exc:
        return str(exc)
    if not path.exists():
        return f"{path}: file not found"
    if not path.is_file():
        return f"{path}: not a regular file"
    try:
        with path.open("rb"):
            pass
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.read_schema(path)
        else:
            read_table(path, nrows=5)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    except Exception as exc:  # pyarrow and pandas raise many parser error types
        return f"{path}: not a readable {fmt} file ({type(exc).__name__}: {exc})"
    return None


def write_node_config(path: str | Path, config: NodeConfig) -> None:
    """Write a config file (used by ``nordfed demo``), atomically; 0600 since it holds the api key."""
    p = Path(path)
    data = config.model_dump(mode="json", exclude_none=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(p)


def _y(value: Any) -> str:
    """A YAML scalar or flow list (JSON is YAML, and quotes every string that could read as something else)."""
    return json.dumps(value, ensure_ascii=False)


def node_config_template(
    hub_url: str,
    name: str,
    cdm_url: str,
    algorithms: list[tuple[PinnedAlgorithm, str]],
    api_key_env: str | None = "NORDFED_NODE_API_KEY",
    api_key_file: str | None = None,
    collaborations: list[int] | None = None,
    organizations: list[int] | None = None,
    researchers: list[PinnedResearcher] | None = None,
) -> str:
    """A commented node.yaml for a site to review and edit (``nordfed node init``). The api key is never written:
    it is read from ``api_key_env`` or ``api_key_file``. ``algorithms`` are (pin, description) pairs; the other
    policy values are NodePolicy's defaults, so the file refuses only what a node refuses by default."""
    d = NodePolicy()
    key_line = (f"# the api key `nordfed hub register-node` printed, in this file (mode 0600)\n"
                f"api_key_file: {_y(api_key_file)}" if api_key_file else
                "# the api key `nordfed hub register-node` printed is read from this environment variable\n"
                "# (or from a file: api_key_file: api.key)\n"
                f"api_key_env: {_y(api_key_env)}")
    people = "".join(f"\n    - {{username: {_y(r.username)}, signing_key: {_y(r.signing_key)}}}"
                     for r in researchers or [])
    pins = "".join(f"\n    # {desc}" * bool(desc) + f"\n    - {{name: {_y(a.name)}, version: {_y(a.version)}, "
                   f"code_hash: {_y(a.code_hash)}}}" for a, desc in algorithms)
    return f"""\
# node.yaml of node {name}, written by `nordfed node init`. Review it with the site's data steward, edit it,
# then start the node: nordfed node start --config THIS_FILE
# Relative paths are relative to this file's folder. Never put the api key itself in this file.

# the hub, as `nordfed hub start` prints it; the node only connects out to it
hub_url: {_y(hub_url)}
{key_line}
# this node's name, as registered on the hub
name: {_y(name)}
# the site's OMOP CDM: duckdb:////absolute/file.duckdb, postgresql://host:5432/db?schema=cdm
cdm_url: {_y(cdm_url)}
# plain tables besides (or instead of) the CDM, name: file (.csv, .parquet)
# tables:
#   default: rows.parquet
# the node's key pairs, made on first start: keep them private and backed up
key_dir: keys
# node.ledger (the node's audit ledger) and seen task nonces; default: key_dir
# state_dir: state
# after replacing the key pair on purpose: the earlier signing.pub, so older ledger entries still verify
# previous_signing_keys: []
# CA bundle for an https hub's certificate (default: the system's)
# tls_ca_file: ca.pem
poll_timeout_s: {_y(NodeConfig.model_fields["poll_timeout_s"].default)}
# seconds the CDM stays open after a task (then the DuckDB file is free for the site's own tools)
cdm_idle_s: {_y(NodeConfig.model_fields["cdm_idle_s"].default)}

# What this node allows. Empty lists allow nobody.
policy:
  # collaboration ids (`nordfed hub list collaborations`)
  collaborations: {_y(collaborations or [])}
  # organizations whose researchers may run tasks here (`nordfed hub list organizations`)
  organizations: {_y(organizations or [])}
  # each researcher's signing key as their `nordfed login` printed it, learnt from them, not from the hub:
  #   - {{username: alice, signing_key: "base64..."}}
  researchers:{people or " []"}
  # the allowlist, pinned by name, version and code hash (`nordfed algorithms --json`); delete an entry to
  # refuse that algorithm
  algorithms:{pins or " []"}
  # counts below this are suppressed or refused (lower only with allow_min_cell_count_below_default: true)
  min_cell_count: {_y(d.min_cell_count)}
  allow_min_cell_count_below_default: {_y(d.allow_min_cell_count_below_default)}
  # true releases exact per-time survival aggregates (KM, unstratified Cox)
  exact_event_times: {_y(d.exact_event_times)}
  # sd of the noise added to every released Kaplan-Meier time (0 = none)
  event_time_noise: {_y(d.event_time_noise)}
  # false: a failed run tells the researcher (and the hub) only the error's type, not its message
  share_error_details: {_y(d.share_error_details)}
  # per run
  time_limit_s: {_y(d.time_limit_s)}
  memory_limit_mb: {_y(d.memory_limit_mb)}
  # tasks signed longer ago than this are refused
  max_task_age_s: {_y(d.max_task_age_s)}
  # algorithms whose results leave only masked for a sum over nodes (secure aggregation), e.g. the rounds of
  # fits: [nordfed.lasso.newton, nordfed.lasso.deviance, nordfed.glm.irls, nordfed.cox.stratum,
  # nordfed.cox.risk_sets, nordfed.text.context_lr]. This site then cannot be the only site of such a fit
  # (with two sites, leave-one-site-out validation trains on one)
  secure_aggregation: {_y(d.secure_aggregation)}
  # the fewest nodes, this one included, such a sum may be over
  secure_aggregation_min_sites: {_y(d.secure_aggregation_min_sites)}
  # differential privacy: the total epsilon each researcher may spend here, charged per task that asks for it
  # (dp: {{epsilon: 0.5}}) on the node's ledger; null: no limit
  privacy_budget: {_y(d.privacy_budget)}
  # true: refuse every task that does not ask for differential privacy
  dp_required: {_y(d.dp_required)}
"""
