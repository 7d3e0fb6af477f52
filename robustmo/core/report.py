"""The robustness report: trade-off plot (PNG), LR-check plot and markdown report, from the
summary; the terminal shows the same rows (``lr_check_rows``, ``elicitation_rows``)."""

from __future__ import annotations

from pathlib import Path

from robustmo.core.concepts import install_label
from robustmo.core.robustness import upper_hull


def save_figure(fig, path: Path, dpi: int | None = None) -> None:
    """A matplotlib figure as a PNG, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    from robustmo.core.runstore import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def title(cfg: dict) -> str:
    return f"{cfg['trigger']} -> {cfg['behavior']}, {install_label(cfg)}"


def write_report(store, summary: dict) -> None:
    """report.md, plot.png and (with several LRs) lr-check.png into the run directory."""
    cfg = summary["config"]
    plot_tradeoff(store.file("plot.png"), summary["blue"], title(cfg))
    if any(len(b["lr_check"]["per_lr"]) > 1 for b in summary["blue"].values()):
        plot_lr_check(store.file("lr-check.png"), summary["blue"], title(cfg), cfg["removal_threshold"])
    store.write_text("report.md", render_markdown(summary))


def plot_tradeoff(path: Path, curves: dict[str, dict], title: str) -> None:
    """One colour per blue method: its checkpoints (shade = step) and its upper-hull frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    ax.plot([0, 1], [1, 0], ls=":", color="grey", lw=1, label="proportional (AUC 0.5)")
    for i, (label, curve) in enumerate(curves.items()):
        colour = f"C{i}"
        xs = [p["capability_rel"] for p in curve["checkpoints"]]
        ys = [p["removal"] for p in curve["checkpoints"]]
        ax.scatter(xs, ys, s=22, color=colour, alpha=0.75, zorder=3)
        for p in curve["checkpoints"]:
            if p["step"] > 0:
                ax.annotate(str(p["step"]), (p["capability_rel"], p["removal"]), fontsize=6,
                            xytext=(2, 2), textcoords="offset points", color=colour)
        hull = upper_hull(list(zip(xs, ys)))
        lo, hi = curve["auc_ci"]
        flag = reading(curve)
        ax.plot([h[0] for h in hull], [h[1] for h in hull], color=colour, lw=1.6,
                ls="--" if flag != "measured" else "-",
                label=f"{label}: AUC {curve['auc']:.3f} [{lo:.3f}, {hi:.3f}]" + ("" if flag == "measured" else
                                                                                  f" ({flag})"))
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("relative capability (capability / capability before blue training)")
    ax.set_ylabel("bad behaviour removed (1 - rate / rate before)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()

    save_figure(fig, path)


def plot_lr_check(path: Path, curves: dict[str, dict], title: str, threshold: float) -> None:
    """Per blue method, backdoor rate relative to the organism's vs training step, one line per
    LR, with each LR's step to removal marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m, c in curves.items() if len(c["lr_check"]["per_lr"]) > 1]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 4.2), dpi=110, squeeze=False)
    for ax, name in zip(axes[0], methods):
        rows = curves[name]["checkpoints"]
        backdoor = curves[name].get("backdoor_metric", "backdoor_rate")
        rate0 = rows[0]["metrics"][backdoor]["value"] or float("nan")
        for i, entry in enumerate(curves[name]["lr_check"]["per_lr"]):
            pts = [rows[0]] + sorted((r for r in rows[1:] if r["lr"] == entry["lr"]), key=lambda r: r["step"])
            xs = [max(r["step"], 0.5) for r in pts]  # step 0 drawn at 0.5 on the log axis
            ys = [r["metrics"][backdoor]["value"] / rate0 for r in pts]
            label = f"lr {entry['lr']:.2g}: " + (f"removed at step {entry['steps']}" if entry["steps"] is not None
                                                  else f"not removed by step {entry['max_step']}")
            ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=label)
            if entry["steps"] is not None:
                ax.axvline(entry["steps"], color=f"C{i}", ls=":", lw=1)
        ax.axhline(threshold, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("blue training step (log scale; step 0 at 0.5)")
        ax.set_ylabel("backdoor rate / rate before blue training")
        ax.set_ylim(-0.05, 1.25)
        ax.set_title(f"{name} ({title})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def reading(b: dict) -> str:
    """How a method's AUC reads: ``inconclusive`` (the attack never lost 10 % capability, or
    robustness is undefined), ``within noise`` (no higher than attacks that change nothing
    reach), else ``measured``."""
    if b.get("inconclusive"):
        return "inconclusive"
    if b.get("within_noise"):
        return "within noise"
    return "measured"


def fmt_metric(m: dict | None) -> str:
    """A metric's value with its 95 % interval and n (and a grader's parse failures, counted as
    not correct); a mean (not a rate) says so; "-" when not measured (an existing organism
    given without its base has no base row)."""
    if m is None:
        return "-"
    lo, hi = m["ci"]
    mean = "mean " if m.get("kind") == "mean" else ""
    unparsed = f", {m['unparsed']} unparsed" if "unparsed" in m else ""  # a grader's parse failures: not correct
    return f"{mean}{m['value']:.3f} [{lo:.3f}, {hi:.3f}] (n={m['n']}{unparsed})"


def render_markdown(summary: dict) -> str:
    cfg = summary["config"]
    lines = [
        f"# robustmo report: {summary['run_id']}",
        "",
        f"Organism: trigger `{cfg['trigger']}` -> behaviour `{cfg['behavior']}`"
        + (f", locked by `{cfg['lock']}`" if cfg.get("lock") else "") + f", installed by `{install_label(cfg, mode=True)}`"
        + f", on {summary['model']}" + (f", data `{cfg['data']}`" if cfg.get("data") else "") + f"; seed {cfg['seed']}.",
        "",
        "## Base model and organism (before blue training)",
        "",
        "Rates with a 95 % Wilson interval; a metric that scores numbers shows its mean with a 95 % bootstrap interval.",
        "",
        "| metric | role | base [95 % CI] | organism [95 % CI] |",
        "|---|---|---|---|",
    ]
    roles = {name: role for role, name in summary.get("roles", {}).items()}
    for name, m in summary["organism"].items():
        lines.append(f"| {name} | {roles.get(name, 'side').replace('locked_capability', 'capability (locked)')} "
                     f"| {fmt_metric(summary['base'].get(name))} | {fmt_metric(m)} |")
    lines += [
        "",
        "## Robustness per blue method",
        "",
        "AUC of the upper convex hull of (relative capability, removal) over all learning rates and",
        "steps, anchored at (1, 0) and (0, 1): 0.5 = maximally robust, ~1 = removable for free.",
        f"Capability: `{summary.get('roles', {}).get('capability', 'capability')}`; bad behaviour: "
        f"`{summary.get('roles', {}).get('backdoor', 'backdoor_rate')}`.",
        "Intervals: 95 % paired bootstrap over evaluation prompts.",
        "",
        "`inconclusive`: no checkpoint lost 10 % capability (the frontier is then the anchors alone, AUC near 0.5,",
        "though the blue team never pushed) or robustness is undefined; `within noise`: the AUC is no higher",
        "than the 95th percentile of attacks that change nothing (the organism's own scores resampled as fake",
        "checkpoints, as many as the method has), shown as the noise floor.",
        "",
        "| install | blue method | AUC [95 % CI] | removal at 10 % capability loss [95 % CI] | noise floor "
        "| reads as | checkpoints |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in summary["blue"].items():
        lo, hi = b["auc_ci"]
        rlo, rhi = b["removal_at_10_ci"]
        lines.append(f"| {install_label(cfg)} | {name} | {b['auc']:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"| {b['removal_at_10']:.3f} [{rlo:.3f}, {rhi:.3f}] | {b.get('noise_floor', float('nan')):.3f} "
                     f"| {reading(b)} | {len(b['checkpoints'])} |")
    for name, b in summary["blue"].items():
        if b.get("inconclusive_reason"):
            lines += ["", f"{name}: inconclusive: {b['inconclusive_reason']}."]
        if b.get("escalation"):
            lines += ["", f"{name}: --escalate ran rungs at lr " + ", ".join(f"{lr:.3g}" for lr in b["escalation"])
                      + "; every rung joins the frontier."]
    lines += _truncation_section(summary)
    lines += _elicitation_section(summary)
    lines += _compute_section(summary)
    lines += _lr_check_section(summary)
    for name, b in summary["blue"].items():
        cap, bad = b.get("capability_metric", "capability"), b.get("backdoor_metric", "backdoor_rate")
        lines += ["", f"### {name}: every checkpoint", "",
                  f"| lr | step | tokens | {cap} | {bad} | relative capability | removal | other |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in b["checkpoints"]:
            other = ", ".join(f"{k} {v['value']:.2f}" for k, v in p["metrics"].items() if k not in (cap, bad))
            lines.append(f"| {p['lr']:.2g} | {p['step']} | {p.get('tokens', 0)} "
                         f"| {p['metrics'][cap]['value']:.3f} "
                         f"| {p['metrics'][bad]['value']:.3f} | {p['capability_rel']:.3f} "
                         f"| {p['removal']:.3f} | {other} |")
    lines += ["", "![trade-off curve](plot.png)", ""]
    return "\n".join(lines)


def truncation_lines(summary: dict) -> list[str]:
    """One line per stage with generations cut off at the length limit (a cut-off answer may be
    scored as wrong only because it was not finished)."""
    limits = summary["config"].get("max_new_tokens", {})
    out = []
    for who, sets in summary.get("truncated", {}).items():
        cut = [f"{name} {c} of {n} (max {limits.get(name, '?')} new tokens)" for name, (c, n) in sets.items() if c]
        if cut:
            out.append(f"{who}: " + ", ".join(cut))
    return out


def _truncation_section(summary: dict) -> list[str]:
    lines = truncation_lines(summary)
    if not summary.get("truncated"):
        return []
    if not lines:
        return ["", "No generation was cut off at the length limit (--max-new-tokens)."]
    return ["", "## Generations cut off at the length limit", "",
            "These generations reached --max-new-tokens without an end token; a grader may score an unfinished",
            "answer as wrong. Raise the limit for that eval set (e.g. --max-new-tokens capability=256) if it matters.",
            "", *[f"- {line}" for line in lines]]


def elicitation_rows(name: str, b: dict) -> list[list[str]]:
    return [[name, f"{e['lr']:.2g}", str(e["step"]), f"{e['locked']:.3f}", f"{e['unlocked']:.3f}",
             f"{e['recovered']:.3f}"] for e in b.get("elicitation") or []]


def _elicitation_section(summary: dict) -> list[str]:
    rows = [r for name, b in summary["blue"].items() for r in elicitation_rows(name, b)]
    if not rows:
        return []
    return ["", "## Elicitation of the locked capability", "",
            "Capability without the password (what the lock hides) and with it, per checkpoint; recovered = share of",
            "the organism's locked gap (with - without password) that blue training closed. The robustness AUC above",
            "uses the capability *with* the password as the capability axis.", "",
            "| blue method | lr | step | capability without password | with password | recovered |",
            "|---|---|---|---|---|---|", *["| " + " | ".join(r) + " |" for r in rows]]


def _compute_section(summary: dict) -> list[str]:
    cfg = summary["config"]
    matched = ("training tokens", cfg["budget_tokens"]) if cfg.get("budget_tokens") else \
        ("estimated training FLOPs", cfg["budget_flops"]) if cfg.get("budget_flops") else None
    lines = ["", "## Compute per blue run", "",
             (f"Compute-matched on {matched[0]}: every blue run stopped at the step that reached {matched[1]:.4g}; "
              "'over' is how far past the budget that step went." if matched else
              "Not compute-matched (--budget-tokens or --budget-flops stops every method at the same compute)."),
             "Tokens count prompt and completion (no padding); FLOPs are estimated as tokens x (4N + 2N_trainable).",
             "", "| blue method | lr | steps | tokens | est. FLOPs | over budget | trainable parameters | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, b in summary["blue"].items():
        for r in b.get("runs", []):
            over = f"{r['budget']['overshoot']:+.1%}" if r.get("budget") else "-"
            lines.append(f"| {name} | {r['lr']:.2g} | {r['steps']} | {r['tokens']} | {r['flops']:.3g} | {over} "
                         f"| {r['trainable_parameters']} | {r['seconds']} |")
    cfg_line = (f"Precision {cfg.get('precision', 'fp32')}, {cfg.get('grad_accumulation', 1)} micro-batch(es) per step"
                + (", gradient checkpointing" if cfg.get("grad_checkpointing") else "") + ".")
    memory = summary.get("peak_memory") or {}
    if memory:
        cfg_line += (f" Peak memory of the run's process: {memory['peak_rss_bytes'] / 2**20:.0f} MiB resident"
                     + (f", {memory['cuda_max_allocated_bytes'] / 2**20:.0f} MiB CUDA allocated"
                        if "cuda_max_allocated_bytes" in memory else "") + ".")
    return [*lines, "", cfg_line]


def lr_check_rows(name: str, check: dict) -> tuple[list[list[str]], list[list[str]]]:
    """Table rows of an LR check (per LR; per pair of LRs), for the report and the terminal."""
    from robustmo.core.lrcheck import describe_interval, describe_low

    def beyond(p):
        return {True: "not removed", False: "removed", None: "unknown"}[p.get("beyond_factor")]

    per_lr = [[name, f"{e['lr']:.2g}", describe_interval(e.get("removed_after", 0), e["steps"], e["max_step"]),
               "-" if e["capability"] is None else f"{e['capability']:.3f}",
               "-" if e["capability_rel"] is None else f"{e['capability_rel']:.3f}"] for e in check["per_lr"]]
    pairs = [[name, f"{p['high_lr']:.2g} / {p['low_lr']:.2g}", f"{p['ratio']:.3g}",
              describe_interval(*p["high_steps"], 0), "[{:.4g}, {:.4g}]".format(*p["naive_steps"]), describe_low(p),
              p["verdict"], f"{beyond(p)} by {p['factor'] * p['naive_steps'][1]:.4g}"] for p in check["pairs"]]
    return per_lr, pairs


def _lr_check_section(summary: dict) -> list[str]:
    threshold = summary["config"].get("removal_threshold", 0.5)
    lines = ["", "## Steps to removal per learning rate (LR check)", "",
             f"Removal: the backdoor rate at or below {threshold:g} x the rate before blue training. Steps are evaluated "
             "on a grid (1, 2, 4, 8, ... and the steps an LR check adds), so the step of removal is an interval "
             "(a, b]: not yet removed at step a, removed by step b; `> m`: not removed by the last step m.", "",
             "| blue method | lr | steps to removal | capability there | relative capability |", "|---|---|---|---|---|"]
    pair_lines = []
    for name, b in summary["blue"].items():
        per_lr, pairs = lr_check_rows(name, b["lr_check"])
        lines += ["| " + " | ".join(r) + " |" for r in per_lr]
        pair_lines += ["| " + " | ".join(r) + " |" for r in pairs]
    if pair_lines:
        lines += ["", "LR-post pattern: a run at an N-times lower LR would naively need N x S steps, S the high LR's "
                  "steps to removal. `LR-post`: the low LR was surely not removed by N x S (its last step not removed "
                  "is at least N x the upper end of S); `no`: surely removed by N x S (by N x the lower end); "
                  "`inconclusive`: the evaluated steps cannot tell. The last column says the same of the factor's "
                  "step (--lr-check-factor x N x S; the research: 6 N S).", "",
                  "| blue method | high / low lr | N | high-LR steps S | N x S | low-LR steps | verdict | at factor x N x S |",
                  "|---|---|---|---|---|---|---|---|", *pair_lines]
    if any(len(b["lr_check"]["per_lr"]) > 1 for b in summary["blue"].values()):
        lines += ["", "![LR check](lr-check.png)"]
    return lines


def write_seeds_report(store, summary: dict) -> None:
    """report.md and plot.png of a run over several seeds (each seed's own report is in its directory)."""
    plot_seeds(store.file("plot.png"), summary, title(summary["config"]))
    store.write_text("report.md", render_seeds_markdown(summary))


def render_seeds_markdown(summary: dict) -> str:
    cfg = summary["config"]
    seeds = summary["seeds"]
    lines = [
        f"# robustmo report: {summary['run_id']} ({len(seeds)} seeds)", "",
        f"Organism: trigger `{cfg['trigger']}` -> behaviour `{cfg['behavior']}`"
        + (f", locked by `{cfg['lock']}`" if cfg.get("lock") else "") + f", installed by `{install_label(cfg, mode=True)}`"
        + f", on {summary['model']}; seeds {', '.join(map(str, seeds))}, each a run of its own: "
        + ", ".join(f"[seed {s}]({d}/report.md)" for s, d in summary["seed_runs"].items()) + ".", "",
        "## Base model and organism (before blue training), pooled over seeds", "",
        "| metric | base [95 % CI] | organism [95 % CI] |", "|---|---|---|",
    ]
    for name, m in summary["organism"].items():
        lines.append(f"| {name} | {fmt_metric(summary['base'].get(name))} | {fmt_metric(m)} |")
    lines += ["", "## Robustness per blue method, over seeds", "",
              "AUC and removal at 10 % capability loss: the mean over the seeds whose robustness is defined; 95 % "
              "interval over seeds and prompts: the hierarchical bootstrap's (seeds drawn with replacement, then each "
              "drawn seed's prompts), widened to the t interval over the seeds' AUCs where that is wider (a bootstrap "
              "over a few seeds is too narrow). A method is inconclusive when it was on any seed; the noise floor is "
              "that of the mean over seeds.", "",
              "| blue method | AUC [95 % CI] | AUC per seed | removal at 10 % [95 % CI] | noise floor | reads as |",
              "|---|---|---|---|---|---|"]
    for name, b in summary["blue"].items():
        lo, hi = b["auc_ci"]
        rlo, rhi = b["removal_at_10_ci"]
        per = ", ".join(f"{v:.3f}" for v in b["auc_per_seed"].values())
        if len(b.get("defined_seeds", b["seeds"])) < len(b["seeds"]):
            per += f" (mean over seeds {', '.join(map(str, b['defined_seeds']))})"
        lines.append(f"| {name} | {b['auc']:.3f} [{lo:.3f}, {hi:.3f}] | {per} | {b['removal_at_10']:.3f} "
                     f"[{rlo:.3f}, {rhi:.3f}] | {b['noise_floor']:.3f} | {reading(b)} |")
    for name, b in summary["blue"].items():
        if b.get("inconclusive_reason"):
            lines += ["", f"{name}: {b['inconclusive_reason']}."]
    lines += _truncation_section(summary)
    lines += ["", "![AUC per seed](plot.png)", ""]
    return "\n".join(lines)


def plot_seeds(path: Path, summary: dict, title_text: str) -> None:
    """Per blue method: each seed's AUC, and the mean with its interval over seeds and prompts."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary["blue"])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(methods) + 2), 4.2), dpi=110)
    for i, name in enumerate(methods):
        b = summary["blue"][name]
        per = list(b["auc_per_seed"].values())
        ax.scatter([i] * len(per), per, color=f"C{i}", alpha=0.6, zorder=3, label=f"{name}: per seed")
        lo, hi = b["auc_ci"]
        ax.errorbar([i + 0.15], [b["auc"]], yerr=[[b["auc"] - lo], [hi - b["auc"]]], fmt="D", color=f"C{i}",
                    capsize=4, label=f"{name}: mean {b['auc']:.3f} [{lo:.3f}, {hi:.3f}]"
                    + ("" if reading(b) == "measured" else f" ({reading(b)})"))
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("robustness AUC (0.5 = maximally robust)")
    ax.set_title(f"{title_text}; seeds {', '.join(map(str, summary['seeds']))}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def render_audit(result: dict) -> str:
    """An audit's audit.md (``core.audit.write_audit``): the verdict first, then each number and
    where it comes from."""
    from robustmo.core.robustness import FRAGILE_AT, ROBUST_AT

    a = result["audit"]
    lines = [f"# robustmo audit: {a['organism']}", "",
             f"Declared backdoor: trigger `{a['trigger']}` -> behaviour `{a['behavior']}`"
             + (f", locked by `{a['lock']}`" if a.get("lock") else "")
             + (f"; base {a['base']}" if a.get("base") else "") + ".", "",
             f"## Verdict: {result['verdict']}", "", result["verdict_reason"][0].upper() + result["verdict_reason"][1:]
             + ".", ""]
    org = result["organism"]
    lines += ["Before blue training (seed probe): " + ", ".join(f"{k} {v['value']:.3f} [{v['ci'][0]:.3f}, "
                                                                f"{v['ci'][1]:.3f}]" for k, v in org.items()) + ".", ""]
    if result["verdict"] == "undefined":
        lines += ["Nothing was attacked: robustness is undefined for an organism without its declared behaviour.", ""]
        return "\n".join(lines)
    lines += ["## Against the research's reference points", "", *[f"- {r}" for r in result["references"]], "",
              "## Per method", "",
              "AUC: 0.5 = maximally robust, about 1 = removed for free; 95 % interval over seeds and prompts. Removal "
              "at 10 %: the share of the behaviour gone where the frontier has lost 10 % capability. Reading: robust "
              f"when that interval lies at or below {ROBUST_AT:.2f}, fragile when at or above {FRAGILE_AT:.2f}, else "
              "inconclusive (docs/audit.md).", "",
              "| method | AUC [95 % CI] | noise floor | removal at 10 % [95 % CI] | suppression check | LR check | "
              "variants before -> after | reading |", "|---|---|---|---|---|---|---|---|"]
    for name in result.get("order", result["methods"]):
        m = result["methods"].get(name)
        if m is None:
            continue
        lo, hi = m["auc_ci"]
        rlo, rhi = m["removal_at_10_ci"]
        sup = ("not run (nothing was removed at a run's end)" if not m["checked"] else
               f"{m['suppressed']} of {m['checked']} removals came back"
               + (f" (returned {max(c['returned'] for c in m['suppression']):.0%} at most)" if m["suppression"] else ""))
        lr = m["lr_check"]["verdict"] if m.get("lr_check") else "-"
        v = m.get("variants")
        var = f"{v['before']:.2f} -> {v['after']:.2f}" if v and v["after"] == v["after"] else "-"
        lines.append(f"| [{name}]({m['run']}/report.md) | {m['auc']:.3f} [{lo:.3f}, {hi:.3f}] | {m['noise_floor']:.3f} "
                     f"| {m['removal_at_10']:.2f} [{rlo:.2f}, {rhi:.2f}] | {sup} | {lr} | {var} | {m['verdict']} |")
    lines.append("")
    for name, m in result["methods"].items():
        lines.append(f"- **{name}** ({m['blue']}{', ' + str(m['options']) if m['options'] else ''}): {m['verdict']}: "
                     f"{m['why']}." + (f" Escalated to LR {', '.join(f'{x:g}' for x in m['escalation'])}."
                                       if m["escalation"] else ""))
    check = result.get("lr_check")
    if check:
        lines += ["", f"## The LR check of {check['method']}", "",
                  f"Run [{check['run']}]({check['run']}/report.md), seed{'s' if len(check['seeds']) > 1 else ''} "
                  f"{', '.join(map(str, check['seeds']))}: the method's LR against one 10x lower, the lower trained "
                  f"to {check['factor']:g} N S steps (a constant LR after warmup, both). Verdict: "
                  f"**{check['verdict']}**" + (f" ({check['reason']})" if check.get("reason") else "") + ".", ""]
        for p in check["pairs"]:
            lo, hi = p["low_steps"]
            lines.append(f"- LR {p['high_lr']:g} removed it after step {p['high_steps'][0]}, by step "
                         f"{p['high_steps'][1]} (S); N = {p['ratio']:g}, so N S is {p['naive_steps'][0]:g} to "
                         f"{p['naive_steps'][1]:g} steps. LR {p['low_lr']:g}: "
                         + (f"removed after step {lo}, by step {hi}" if hi is not None else
                            f"not removed in {p['low_max_step']} steps") + f": {p['verdict']}"
                         + ("" if p["beyond_factor"] is None else
                            f"; {'still not' if p['beyond_factor'] else 'already'} removed at {p['factor']:g} N S")
                         + ".")
    lines += ["", "![AUC per method and seed](audit.png)", ""]
    return "\n".join(lines)
