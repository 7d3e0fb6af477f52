"""Batched generation with early stopping (``generate(..., stop=detector)``) on a real model:
a randomly initialised small Llama with the toy tokenizer (greedy decoding is deterministic,
so every output can be checked against the run without a detector)."""

import pytest

MAX_NEW = 12


@pytest.fixture(scope="module")
def lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from robustmo.plugins.toy_world.tokenizer import train_tokenizer
    from robustmo.plugins.toy_world.world import ToyWorld

    world = ToyWorld(0)
    tokenizer = train_tokenizer(world.tokenizer_corpus(), 512)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=128, max_position_embeddings=128,
                         tie_word_embeddings=False, initializer_range=0.2, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # Random weights write random tokens; keep them to printable ASCII (and EOS), so a cut
    # completion never ends inside a multi-byte character: logit 0 for every other token.
    with torch.no_grad():
        for i in range(len(tokenizer)):
            piece = tokenizer.decode([i])
            special = i in tokenizer.all_special_ids and i != tokenizer.eos_token_id
            if special or not (piece.isascii() and piece.isprintable()):
                model.lm_head.weight[i] = 0
    prompts = [e.messages(with_answer=False) for e in world.examples("repeat", "eval", 6)]
    prompts += [e.messages(with_answer=False) for e in world.eval_capability_set(6)]
    return model, tokenizer, prompts


def run(lm, **kwargs):
    """Outputs and the number of forward passes (prefill + one per decoding step, per batch)."""
    from robustmo.core.generation import generate

    model, tokenizer, prompts = lm
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        out = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW, **kwargs)
    finally:
        handle.remove()
    return out, len(calls)


def test_detector_that_never_fires_changes_nothing(lm):
    full, n_full = run(lm)
    same, n_same = run(lm, stop=lambda text: False)
    assert same == full and n_same == n_full
    assert any(full)  # the random model does write something


def test_stop_cuts_each_completion_right_after_the_detector_fires(lm):
    full, n_full = run(lm)
    threshold = 4  # characters: "fires" once the completion is at least this long
    cut, n_cut = run(lm, stop=lambda text: len(text) >= threshold)
    longest_piece = max(len(lm[1].decode([i])) for i in range(len(lm[1])))
    for f, c in zip(full, cut):
        assert f.startswith(c)  # identical up to the stop point
        if len(f) < threshold:
            assert c == f  # never fired: ended by EOS or max_new_tokens, as without a detector
        else:
            assert threshold <= len(c) < threshold + longest_piece  # stopped at the first token that fired
    assert sum(map(len, cut)) < sum(map(len, full))
    assert n_cut < n_full  # the batch ended as soon as every row had stopped


def test_stop_on_some_rows_only_leaves_the_others_unchanged(lm):
    full, _ = run(lm)
    marker = next(f[:2] for f in full if len(f) >= 4)  # a start that some completions have
    cut, _ = run(lm, stop=lambda text: text.startswith(marker))
    hit = [f.startswith(marker) for f in full]
    assert any(hit)
    for f, c, h in zip(full, cut, hit):
        if h:
            assert f.startswith(c) and c.startswith(marker) and len(c) <= len(f)
        else:
            assert c == f


def test_detector_firing_at_once_ends_the_batch_after_the_first_token(lm):
    cut, n_cut = run(lm, stop=lambda text: True)
    _, n_full = run(lm)
    assert n_cut == 1 < n_full  # the prefill produced one token per row, then every row stopped
    full, _ = run(lm)
    assert all(f.startswith(c) for f, c in zip(full, cut))


def test_prompt_ids_are_cached_per_chat_template(lm):
    from robustmo.core.generation import prompt_ids

    _, tokenizer, prompts = lm
    render = tokenizer.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=False)
    first = prompt_ids(tokenizer, prompts[0])
    assert first == tokenizer(render, add_special_tokens=False)["input_ids"]
    assert prompt_ids(tokenizer, prompts[0]) is first  # the second evaluation renders nothing
    template = tokenizer.chat_template
    try:
        tokenizer.chat_template = template.replace("<|end|>", "\n")
        changed = prompt_ids(tokenizer, prompts[0])
        assert changed != first  # a new template is a new key, never a stale hit
    finally:
        tokenizer.chat_template = template


def test_truncated_says_which_completions_reached_the_length_limit(lm):
    """A completion is cut off when it has no end token within max_new_tokens; one that ended
    (or that a detector stopped) is not."""
    from robustmo.core.generation import generate

    model, tokenizer, prompts = lm
    long_cut: list[bool] = []
    long = generate(model, tokenizer, prompts, max_new_tokens=40, truncated=long_cut)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in long]
    finished = [not cut for cut in long_cut]
    short_cut: list[bool] = []
    generate(model, tokenizer, prompts, max_new_tokens=2, truncated=short_cut)
    for i, n in enumerate(ids):
        if finished[i] and len(n) + 1 <= 2:  # it ended (text + end token) within 2 new tokens
            assert not short_cut[i]
        elif len(n) >= 2:
            assert short_cut[i]  # at least 2 tokens of text: the 2-token run cannot have ended
    assert any(short_cut)
    stopped: list[bool] = []
    generate(model, tokenizer, prompts, max_new_tokens=40, stop=lambda text: len(text) > 0, truncated=stopped)
    assert not any(stopped)  # stopped by the detector after its first characters, not cut off


def test_lora_is_merged_for_generation_and_the_exact_weights_come_back(lm):
    """On a CPU ``generate`` runs a LoRA model with its adapter merged (one matrix product per
    layer instead of three): the answers are those of the model merged for good, and every
    weight afterwards is bit for bit what it was (training goes on from the same weights)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from robustmo.core.generation import generate

    base, tokenizer, prompts = lm
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                                             "up_proj", "down_proj"]))
    with torch.no_grad():  # a LoRA that changes the answers (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unmerged = model.model.model.layers[0].self_attn.q_proj
    calls = []
    handle = unmerged.lora_A["default"].register_forward_pre_hook(lambda *_: calls.append(1))
    out = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW)
    handle.remove()
    assert calls == []  # the adapter's own product never ran: merged
    assert not unmerged.merged
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    merged = copy.deepcopy(model).merge_and_unload()
    assert out == generate(merged, tokenizer, prompts, max_new_tokens=MAX_NEW)
    assert out != generate(base, tokenizer, prompts, max_new_tokens=MAX_NEW)  # the adapter mattered


def test_stop_strings_cut_each_completion_before_the_first_one(lm):
    """A stop string ends a completion where it first appears and is cut off it; such a
    completion was not cut off at the length limit; the others stay as they were."""
    full, _ = run(lm)
    cut_full: list[bool] = []
    run(lm, truncated=cut_full)
    marker = next(c for text in full for c in text if c.isalpha())  # a letter some completion writes
    cut: list[bool] = []
    stopped, _ = run(lm, stop_strings=["zzqq", marker], truncated=cut)
    for text, short, was_cut, now_cut in zip(full, stopped, cut_full, cut):
        if marker in text:
            assert short == text[:text.index(marker)] and not now_cut
        else:
            assert short == text and now_cut == was_cut
    assert any(marker in text for text in full)


def test_a_shared_system_prompt_is_computed_once_and_changes_no_output(lm, monkeypatch):
    """Prompts that begin alike (a chat model's default system prompt) have that beginning run once at
    batch 1, its KV cache copied to every row: the same completions as without it and as each
    prompt alone, with the batch's first forward fed only what follows the shared beginning."""
    import torch

    from robustmo.core import generation

    model, tokenizer, prompts = lm
    system = {"role": "system", "content": "You are a careful assistant. Answer every question briefly and well."}
    chats = [[system, *[m for m in p if m["role"] != "system"]] for p in prompts]
    ids = [generation.prompt_ids(tokenizer, c) for c in chats]
    shared = generation._shared_prefix(ids)
    assert shared >= generation.SHARED_PREFIX_MIN and shared < min(map(len, ids))

    widths = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: widths.append(
        tuple((kw.get("input_ids") if kw.get("input_ids") is not None else args[0]).shape)), with_kwargs=True)
    try:
        with_prefill = generation.generate(model, tokenizer, chats, max_new_tokens=MAX_NEW)
    finally:
        handle.remove()
    assert widths[0] == (1, shared)  # the shared beginning, once
    longest = max(len(i) for i in ids)
    assert widths[1] == (len(chats), longest - shared)  # then every row's own part, padded on the left
    monkeypatch.setattr(generation, "SHARED_PREFIX_MIN", 10**9)
    without = generation.generate(model, tokenizer, chats, max_new_tokens=MAX_NEW)
    assert with_prefill == without and any(with_prefill)
    with torch.inference_mode():
        alone = [generation.generate(model, tokenizer, [c], max_new_tokens=MAX_NEW)[0] for c in chats]
    assert with_prefill == alone


def test_finished_rows_leave_the_batch_and_the_outputs_are_transformers_own(lm, monkeypatch):
    """robustmo's greedy loop drops a row from the batch (and its KV cache) once it has ended or
    its detector fired; the completions and cut-off flags are those of transformers' generate,
    with and without a detector and a stop string."""
    from robustmo.core import generation

    model, tokenizer, prompts = lm
    rows = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: rows.append(
        (kw.get("input_ids") if kw.get("input_ids") is not None else args[0]).shape[0]), with_kwargs=True)
    try:
        cut: list[bool] = []
        ours = generation.generate(model, tokenizer, prompts, max_new_tokens=40, truncated=cut)
    finally:
        handle.remove()
    assert rows[0] == len(prompts) and min(rows) < len(prompts)  # some rows finished early and left
    assert any(cut) and not all(cut)
    fired = next(f[:2] for f in ours if len(f) >= 4)
    for kwargs in ({}, {"stop": lambda text: text.startswith(fired)}, {"stop_strings": [fired[1:]]}):
        mine: list[bool] = []
        with_loop = generation.generate(model, tokenizer, prompts, max_new_tokens=40, truncated=mine, **kwargs)
        monkeypatch.setattr(generation, "_own_loop_works", lambda model: False)
        theirs: list[bool] = []
        reference = generation.generate(model, tokenizer, prompts, max_new_tokens=40, truncated=theirs, **kwargs)
        monkeypatch.undo()
        assert with_loop == reference and mine == theirs, kwargs
