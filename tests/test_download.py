"""`framepack download`: the hub faked at its boundary (`snapshot_download`), no network.

The fake serves tiny files in the released layouts plus the files the loader never reads
(HunyuanVideo's own transformer, a .bin copy, Redux's embedder, READMEs) and applies
`allow_patterns` with huggingface_hub's own matcher. What arrives must be exactly what the
loader reads: every released file fetched, nothing else, and the result loads offline.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hunyuan_fixtures import build_hunyuan_dir, build_redux_dir

pytest.importorskip("diffusers")
from huggingface_hub.file_download import DryRunFileInfo
from huggingface_hub.utils import filter_repo_objects

from framepack.cli import main
from framepack.errors import UserError
from framepack.hunyuan.download import download, plan, repositories
from framepack.hunyuan.paths import FLUX_REDUX, HUNYUAN_VIDEO, TRANSFORMER_F1, TRANSFORMER_INVERTED
from framepack.models import PRESETS, PackedTransformer

JUNK = {  # in the released repositories, never read by the loader
    HUNYUAN_VIDEO.repo_id: [
        "transformer/diffusion_pytorch_model.safetensors",
        "transformer/config.json",
        "text_encoder/pytorch_model.bin",
        "vae/diffusion_pytorch_model.fp32.safetensors",
        "README.md",
    ],
    FLUX_REDUX.repo_id: ["flux1-redux-dev.safetensors", "image_embedder/config.json", "README.md"],
    TRANSFORMER_INVERTED.repo_id: [".gitattributes", "README.md"],
    TRANSFORMER_F1.repo_id: [".gitattributes"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> dict[str, Path]:
    """repo_id -> a folder holding the repository's files (tiny, released layout, plus junk)."""
    root = tmp_path_factory.mktemp("server")
    repos = {
        HUNYUAN_VIDEO.repo_id: build_hunyuan_dir(root / "HunyuanVideo"),
        FLUX_REDUX.repo_id: build_redux_dir(root / "flux_redux_bfl"),
    }
    # The released CLIP tokenizer also ships its slow files (transformers 5 saves tokenizer.json only).
    clip_tokenizer = repos[HUNYUAN_VIDEO.repo_id] / "tokenizer_2"
    vocab = json.loads((clip_tokenizer / "tokenizer.json").read_text())["model"]["vocab"]
    (clip_tokenizer / "vocab.json").write_text(json.dumps(vocab))
    (clip_tokenizer / "merges.txt").write_text("#version: 0.2\n")
    for layout in (TRANSFORMER_INVERTED, TRANSFORMER_F1):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = PackedTransformer(PRESETS["tiny"].replace(pooled_projection_dim=32))
        model.save_pretrained(root / layout.name, max_shard_size="100KB")
        repos[layout.repo_id] = root / layout.name
    for repo_id, names in JUNK.items():
        for name in names:
            path = repos[repo_id] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not read by the loader")
    return repos


def released_files(folder: Path, repo_id: str) -> set[str]:
    every = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return every - set(JUNK[repo_id])


class FakeHub:
    """`snapshot_download` as huggingface_hub's: same patterns, dry runs, local_dir or the cache."""

    def __init__(self, server: dict[str, Path], cache: Path, fail: BaseException | None = None) -> None:
        self.server, self.cache, self.fail = server, cache, fail
        self.calls: list[tuple[str, bool]] = []

    def snapshot_download(self, repo_id, *, allow_patterns=None, local_dir=None, dry_run=False, **kwargs):
        assert not kwargs, kwargs
        self.calls.append((repo_id, dry_run))
        if self.fail is not None:
            raise self.fail
        source = self.server[repo_id]
        names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        chosen = list(filter_repo_objects(names, allow_patterns=allow_patterns))
        target = Path(local_dir) if local_dir else self._snapshot(repo_id)
        if dry_run:
            return [
                DryRunFileInfo(
                    commit_hash="0123abcd",
                    file_size=(source / n).stat().st_size,
                    filename=n,
                    local_path=str(target / n),
                    is_cached=(target / n).is_file(),
                    will_download=not (target / n).is_file(),
                )
                for n in chosen
            ]
        for name in chosen:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
        return str(target)

    def _snapshot(self, repo_id: str) -> Path:
        org, name = repo_id.split("/")
        repo = self.cache / f"models--{org}--{name}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("0123abcd")
        return repo / "snapshots" / "0123abcd"


def fetched(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def load_offline(model: str, model_dir: Path | None):
    from framepack.components import LoadOptions, load_components

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny tokenizer's template length differs from 95
        options = LoadOptions(
            model_dir=None if model_dir is None else str(model_dir), device="cpu", dtype="fp32"
        )
        return load_components(model, options)


@pytest.mark.parametrize("model", ["hunyuan-inverted", "hunyuan-f1"])
def test_download_fetches_exactly_what_the_loader_reads(server, tmp_path, model):
    hub = FakeHub(server, tmp_path / "cache")
    lines: list[str] = []
    paths = download(model, tmp_path / "models", hub=hub, echo=lines.append)
    for layout in repositories(model):
        assert fetched(tmp_path / "models" / layout.name) == released_files(
            server[layout.repo_id], layout.repo_id
        )
    assert paths.transformer == tmp_path / "models" / repositories(model)[0].name
    # The total comes first, from dry runs only; then the fetches.
    assert lines[0].startswith(f"{model}: ") and " GB; " in lines[0] and "to fetch into" in lines[0]
    assert [dry for _, dry in hub.calls] == [True] * 3 + [False] * 3
    assert (
        lines[-1]
        == f"ready: framepack generate --model {model} --model-dir {tmp_path / 'models'} --image IMAGE --prompt TEXT"
    )
    comp = load_offline(model, tmp_path / "models")  # every file the loaders open was fetched
    assert comp.prompt_encoder.encode(["a cat walks"]).states.shape[1] == 256


def test_download_to_the_cache_is_found_without_model_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    hub = FakeHub(server, tmp_path / "cache")
    download("hunyuan-f1", hub=hub, echo=lambda line: None)
    assert load_offline("hunyuan-f1", None).spec.name == "hunyuan-f1"


def test_download_resumes_only_what_is_missing(server, tmp_path):
    hub = FakeHub(server, tmp_path / "cache")
    download("hunyuan-inverted", tmp_path / "m", hub=hub, echo=lambda line: None)
    shard = sorted((tmp_path / "m" / "FramePackI2V_HY").glob("*.safetensors"))[0]
    shard.unlink()
    hub.calls.clear()
    remaining = plan("hunyuan-inverted", tmp_path / "m", hub=hub)
    assert [p.missing for p in remaining] == [(shard.name,), (), ()]
    assert remaining[0].to_fetch == (server[TRANSFORMER_INVERTED.repo_id] / shard.name).stat().st_size
    lines: list[str] = []
    download("hunyuan-inverted", tmp_path / "m", hub=hub, echo=lines.append)
    assert shard.is_file()
    assert [c for c in hub.calls if not c[1]] == [(TRANSFORMER_INVERTED.repo_id, False)]  # only that repo
    assert "(0 to fetch)" in lines[2] and "(0 to fetch)" in lines[3]


def test_download_failures_are_one_line(server, tmp_path, monkeypatch, capsys):
    hub = FakeHub(server, tmp_path / "cache", fail=OSError("Connection refused\nmore detail"))
    with pytest.raises(
        UserError, match=r"could not download lllyasviel/FramePackI2V_HY: Connection refused; "
    ):
        download("hunyuan-inverted", tmp_path / "m", hub=hub, echo=lambda line: None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        download("hunyuan-inverted", tmp_path / "file", hub=FakeHub(server, tmp_path), echo=lambda line: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        download("hunyuan-inverted", tmp_path / "m", hub=FakeHub(server, tmp_path), echo=lambda line: None)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import framepack.hunyuan.download as module

    monkeypatch.setattr(
        module, "_hub", lambda: FakeHub(server, tmp_path, fail=OSError("Name or service not known"))
    )
    assert main(["download", "hunyuan-f1", "--dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "Name or service not known" in err
    with pytest.raises(SystemExit) as stop:
        main(["download", "hunyuan-13b"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_download_refuses_a_full_disk(server, tmp_path, monkeypatch):
    import framepack.hunyuan.download as module

    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(UserError, match=r"GB to fetch but .* has 0\.0 GB free"):
        download("hunyuan-inverted", tmp_path / "m", hub=FakeHub(server, tmp_path), echo=lambda line: None)
    assert not (tmp_path / "m").exists()


def test_missing_weights_name_the_one_command(tmp_path, capsys):
    """Without weights, generate (and `framepack ui`, which loads the same way) names the command."""
    image = tmp_path / "s.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    code = main(
        ["generate", "--model", "hunyuan-f1", "--model-dir", str(tmp_path / "none"), "--image", str(image),
         "--device", "cpu", "--out", str(tmp_path / "x.mp4")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith(
        f"Get the weights (about 40 GB) with: framepack download hunyuan-f1 --dir {tmp_path / 'none'}"
    )


def test_layout_files_cover_the_required_files():
    """Each file `locate` requires is one `download` fetches (same patterns, hub's matcher)."""
    for layout in (TRANSFORMER_INVERTED, TRANSFORMER_F1, HUNYUAN_VIDEO, FLUX_REDUX):
        for sub, names in layout.parts:
            prefix = f"{sub}/" if sub else ""
            for name in names:
                if name.startswith("*"):  # some weights file of that folder
                    weights = [f for f in layout.files if f.startswith(prefix) and f.endswith(name[1:])]
                    assert weights and all("/" not in f[len(prefix) :] for f in weights), (
                        layout.repo_id,
                        sub,
                    )
                else:
                    path = prefix + name
                    assert list(filter_repo_objects([path], allow_patterns=list(layout.files))), path
