"""One typed place for profile, paths and model choices.

Values come from the profile YAML shipped in ``caption_assets/profiles`` and can be overridden by
environment variables (see the README's configuration table). Everything is validated when the code
location loads, so a typo fails fast with a one-line message naming the setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from caption_assets.consensus import SELECTIONS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the setting."""


# Where a run's steps execute: one process per step, the run worker's own process, one pod per step, or one
# Ray job per step on a Ray cluster (dagster-ray).
EXECUTORS = ("multiprocess", "in_process", "k8s", "ray")


@dataclass(frozen=True)
class Settings:
    profile: str
    crawl_dir: Path
    data_dir: Path
    warehouse_path: Path
    annotations_dir: Path
    clip: dict[str, Any] = field(default_factory=dict)
    captioner: dict[str, Any] = field(default_factory=dict)
    experts: dict[str, Any] = field(default_factory=dict)
    fuser: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)  # fused_captions' guardrail defaults
    scoring: dict[str, Any] = field(default_factory=dict)  # scored_pairs' keep-rule defaults
    compress: dict[str, Any] = field(default_factory=dict)  # compressed_dataset's defaults
    evaluation: dict[str, Any] = field(default_factory=dict)  # curation_eval: enabled, recipe
    env: dict[str, str] = field(default_factory=dict)
    automation: bool = True
    max_concurrent: int = 2  # steps at once in one run (the multiprocess executor)
    max_concurrent_runs: int = 2  # runs the CLI keeps in flight at once
    executor: str = "multiprocess"
    k8s_executor_config: Path = PROJECT_ROOT / "deploy" / "k8s" / "executor.yaml"
    ray_address: str = "http://127.0.0.1:8265"  # the Ray cluster's job-submission (dashboard) address
    step_cpus: int = 4  # CPUs a model step asks the cluster for (Ray num_cpus, Kubernetes requests)
    step_gpus: int | None = None  # GPUs a model step asks for; None: one unless every model device is the CPU

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def duplicate_index_path(self) -> Path:
        """The global duplicate index (SQLite), beside the warehouse."""
        return self.warehouse_path.with_name("duplicate_index.sqlite")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else PROJECT_ROOT / p).resolve()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read the profile named by ``CAPTION_ASSETS_PROFILE`` (default ``demo``) plus env overrides."""
    env = dict(os.environ if env is None else env)
    profile = env.get("CAPTION_ASSETS_PROFILE", "demo")
    if profile not in available_profiles():
        raise SettingsError(
            f"CAPTION_ASSETS_PROFILE={profile!r} is not a known profile (choose one of {', '.join(available_profiles())})"
        )
    raw = yaml.safe_load((PROFILES_DIR / f"{profile}.yaml").read_text()) or {}
    paths = raw.get("paths", {})
    data_dir = _resolve(env.get("CAPTION_ASSETS_DATA_DIR", paths.get("data_dir", "data")))
    crawl_dir = _resolve(env.get("CAPTION_ASSETS_CRAWL_DIR", paths.get("crawl_dir", "data/sample/crawl")))
    warehouse = env.get("CAPTION_ASSETS_WAREHOUSE") or paths.get("warehouse")
    warehouse_path = _resolve(warehouse) if warehouse else data_dir / "warehouse.duckdb"
    clip = dict(raw.get("clip", {}))
    if "CAPTION_ASSETS_CLIP_MODEL" in env:  # the architecture a checkpoint named below was trained as
        clip["model_name"] = env["CAPTION_ASSETS_CLIP_MODEL"]
    if "CAPTION_ASSETS_CLIP_PRETRAINED" in env:
        clip["pretrained"] = env["CAPTION_ASSETS_CLIP_PRETRAINED"]
    if "CAPTION_ASSETS_DEVICE" in env:
        clip["device"] = env["CAPTION_ASSETS_DEVICE"]
    annotations = _resolve(env.get("CAPTION_ASSETS_ANNOTATIONS_DIR", paths.get("annotations_dir", "data/annotations")))
    sections = {name: dict(raw.get(name) or {}) for name in ("captioner", "experts", "fuser", "fusion", "scoring", "compress", "evaluation")}
    for name, section in {"clip": clip, **sections}.items():
        if not isinstance(section, dict):
            raise SettingsError(f"profile {profile!r}: section {name!r} must be a mapping")
    if "CAPTION_ASSETS_CAPTIONER" in env:
        sections["captioner"]["model"] = env["CAPTION_ASSETS_CAPTIONER"]
    if "CAPTION_ASSETS_OCR" in env:
        sections["experts"]["ocr"] = env["CAPTION_ASSETS_OCR"].lower() in ("1", "on", "true", "yes")
    if "CAPTION_ASSETS_FUSER_BACKEND" in env:
        sections["fuser"]["backend"] = env["CAPTION_ASSETS_FUSER_BACKEND"]
    passed = {k: v for k, v in env.items() if k in ("CAPTION_ASSETS_FUSER_URL", "CAPTION_ASSETS_FUSER_API_KEY")}
    automation = env.get("CAPTION_ASSETS_AUTOMATION", "on").lower()
    if automation not in ("on", "off"):
        raise SettingsError(f"CAPTION_ASSETS_AUTOMATION={automation!r} must be 'on' or 'off'")
    execution = dict(raw.get("execution") or {})  # the profile's defaults; the environment overrides them
    max_concurrent = _positive(env, "CAPTION_ASSETS_MAX_CONCURRENT", execution.get("max_concurrent", 2))
    max_concurrent_runs = _positive(env, "CAPTION_ASSETS_MAX_CONCURRENT_RUNS", execution.get("max_concurrent_runs", 2))
    executor = env.get("CAPTION_ASSETS_EXECUTOR", execution.get("executor", "multiprocess"))
    if executor not in EXECUTORS:
        raise SettingsError(f"CAPTION_ASSETS_EXECUTOR={executor!r} must be one of {', '.join(EXECUTORS)}")
    step_cpus = _positive(env, "CAPTION_ASSETS_STEP_CPUS", execution.get("step_cpus", 4))
    gpus = env.get("CAPTION_ASSETS_STEP_GPUS", execution.get("step_gpus", "auto"))
    if str(gpus) not in ("auto", "0", "1"):
        raise SettingsError(f"CAPTION_ASSETS_STEP_GPUS={gpus!r} must be auto, 0 or 1")
    step_gpus = None if str(gpus) == "auto" else int(gpus)
    ray_address = str(env.get("CAPTION_ASSETS_RAY_ADDRESS", execution.get("ray_address", "http://127.0.0.1:8265")))
    if "://" not in ray_address:
        raise SettingsError(f"CAPTION_ASSETS_RAY_ADDRESS={ray_address!r} must be the Ray dashboard's URL, e.g. http://127.0.0.1:8265")
    k8s_config = _resolve(env.get("CAPTION_ASSETS_K8S_EXECUTOR_CONFIG", "deploy/k8s/executor.yaml"))
    if executor == "k8s" and not k8s_config.is_file():
        raise SettingsError(f"CAPTION_ASSETS_K8S_EXECUTOR_CONFIG={str(k8s_config)!r} does not exist")
    validate_sections(profile, clip, sections)
    # Local weights are named relative to the project in the profiles; resources get absolute paths.
    if _looks_like_path(str(clip.get("pretrained", ""))):
        clip["pretrained"] = str(_resolve(clip["pretrained"]))
    model = str(sections["captioner"].get("model", ""))
    if model and _resolve(model).is_dir():
        sections["captioner"]["model"] = str(_resolve(model))
    llm = str(sections["fuser"].get("model", ""))
    if llm and sections["fuser"].get("backend") == "transformers" and _resolve(llm).is_dir():  # openai: a served name
        sections["fuser"]["model"] = str(_resolve(llm))
    return Settings(
        profile, crawl_dir, data_dir, warehouse_path, annotations, clip, env=passed, automation=automation == "on",
        max_concurrent=max_concurrent, max_concurrent_runs=max_concurrent_runs, executor=executor, k8s_executor_config=k8s_config,
        ray_address=ray_address, step_cpus=step_cpus, step_gpus=step_gpus, **sections,
    )


def _positive(env: dict[str, str], name: str, default: int = 2) -> int:
    try:
        value = int(env.get(name, str(default)))
        assert value >= 1
    except (ValueError, AssertionError):
        raise SettingsError(f"{name}={env.get(name)!r} must be a positive integer") from None
    return value


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def validate_sections(profile: str, clip: dict[str, Any], sections: dict[str, dict[str, Any]]) -> None:
    """Fail at load time, naming the setting, for values a run would only trip over later."""
    where = f"profile {profile!r}:"
    pretrained = str(clip.get("pretrained", ""))
    if _looks_like_path(pretrained) and not _resolve(pretrained).exists():
        raise SettingsError(f"{where} clip.pretrained={pretrained!r} is not an existing checkpoint file (CAPTION_ASSETS_CLIP_PRETRAINED)")
    for name, section in (("clip", clip), ("captioner", sections["captioner"])):
        if section.get("precision", "fp32") not in ("fp32", "fp16", "bf16"):
            raise SettingsError(f"{where} {name}.precision={section['precision']!r} must be fp32, fp16 or bf16")
        if int(section.get("batch_size", 1)) < 1:
            raise SettingsError(f"{where} {name}.batch_size={section['batch_size']!r} must be >= 1")
    captioner = sections["captioner"]
    if captioner.get("decoding", "diverse_beam") not in ("greedy", "beam", "diverse_beam", "sampling"):
        raise SettingsError(f"{where} captioner.decoding={captioner['decoding']!r} must be greedy, beam, diverse_beam or sampling")
    if captioner.get("selection", "clip") not in SELECTIONS:
        raise SettingsError(f"{where} captioner.selection={captioner['selection']!r} must be {' or '.join(SELECTIONS)}")
    model = str(captioner.get("model", ""))
    if model.startswith(("/", "./", "../")) and not _resolve(model).exists():
        raise SettingsError(f"{where} captioner.model={model!r} is not an existing folder (CAPTION_ASSETS_CAPTIONER)")
    fuser = sections["fuser"]
    if fuser.get("backend", "rules") not in ("rules", "transformers", "openai"):
        raise SettingsError(f"{where} fuser.backend={fuser['backend']!r} must be rules, transformers or openai")
    margin = sections.get("fusion", {}).get("score_margin", 0.02)
    if not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise SettingsError(f"{where} fusion.score_margin={margin!r} must be a cosine difference in [0, 1)")
    scoring = sections.get("scoring", {})
    floor = scoring.get("min_clip_score")
    if floor is not None and (not isinstance(floor, (int, float)) or not -1 <= floor <= 1):
        raise SettingsError(f"{where} scoring.min_clip_score={floor!r} must be a cosine in [-1, 1] (or absent)")
    q = scoring.get("drop_clip_quantile", 0.0)
    if not isinstance(q, (int, float)) or not 0 <= q < 1:
        raise SettingsError(f"{where} scoring.drop_clip_quantile={q!r} must be in [0, 1)")
    compress = sections["compress"]
    ratio = compress.get("target_ratio", 0.2)
    if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise SettingsError(f"{where} compress.target_ratio={ratio!r} must be in (0, 1]")
    share = compress.get("max_ingested_share")
    if share is not None and (not isinstance(share, (int, float)) or not 0 < share <= 1):
        raise SettingsError(f"{where} compress.max_ingested_share={share!r} must be in (0, 1] (or absent)")
    eps = compress.get("semdedup_eps", 0.05)
    if not isinstance(eps, (int, float)) or not 0 <= eps < 1:
        raise SettingsError(f"{where} compress.semdedup_eps={eps!r} must be in [0, 1)")
