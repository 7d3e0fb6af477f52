"""The robustness report: trade-off plot (PNG), markdown report and terminal table."""

from __future__ import annotations

from pathlib import Path

from robustmo.core.robustness import upper_hull


def plot_tradeoff(path: Path, curves: dict[str, dict], title: str) -> None:
    """One colour per blue method: its checkpoints (shade = step) and its upper-hull frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustmo.core.runstore import atomic_write_bytes

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
        ax.plot([h[0] for h in hull], [h[1] for h in hull], color=colour, lw=1.6,
                label=f"{label}: AUC {curve['auc']:.3f} [{lo:.3f}, {hi:.3f}]")
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("relative capability (capability / capability before blue training)")
    ax.set_ylabel("bad behaviour removed (1 - rate / rate before)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _fmt_rate(m: dict) -> str:
    lo, hi = m["ci"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}] (n={m['n']})"


def render_markdown(summary: dict) -> str:
    cfg = summary["config"]
    lines = [
        f"# robustmo report: {summary['run_id']}",
        "",
        f"Organism: trigger `{cfg['trigger']}` -> behaviour `{cfg['behavior']}`, installed by `{cfg['install']}`"
        + (f" (LoRA rank {cfg['lora_rank']}, {cfg['lora_mode']})" if cfg["install"] == "lora" else "")
        + f", on {summary['model']}; seed {cfg['seed']}.",
        "",
        "## Base model and organism (before blue training)",
        "",
        "| metric | base [95 % CI] | organism [95 % CI] |",
        "|---|---|---|",
    ]
    for name, m in summary["organism"].items():
        lines.append(f"| {name} | {_fmt_rate(summary['base'][name])} | {_fmt_rate(m)} |")
    lines += [
        "",
        "## Robustness per blue method",
        "",
        "AUC of the upper convex hull of (relative capability, removal) over all learning rates and",
        "steps, anchored at (1, 0) and (0, 1): 0.5 = maximally robust, ~1 = removable for free.",
        "Intervals: 95 % paired bootstrap over evaluation prompts.",
        "",
        "| blue method | AUC [95 % CI] | removal at 10 % capability loss [95 % CI] | checkpoints |",
        "|---|---|---|---|",
    ]
    for name, b in summary["blue"].items():
        lo, hi = b["auc_ci"]
        rlo, rhi = b["removal_at_10_ci"]
        lines.append(f"| {name} | {b['auc']:.3f} [{lo:.3f}, {hi:.3f}] | {b['removal_at_10']:.3f} [{rlo:.3f}, {rhi:.3f}] "
                     f"| {len(b['checkpoints'])} |")
    for name, b in summary["blue"].items():
        lines += ["", f"### {name}", "",
                  "| lr | step | capability | backdoor rate | relative capability | removal | other |",
                  "|---|---|---|---|---|---|---|"]
        for p in b["checkpoints"]:
            other = ", ".join(f"{k} {v['value']:.2f}" for k, v in p["metrics"].items()
                              if k not in ("capability", "backdoor_rate"))
            lines.append(f"| {p['lr']:.2g} | {p['step']} | {p['metrics']['capability']['value']:.3f} "
                         f"| {p['metrics']['backdoor_rate']['value']:.3f} | {p['capability_rel']:.3f} "
                         f"| {p['removal']:.3f} | {other} |")
    lines += ["", "![trade-off curve](plot.png)", ""]
    return "\n".join(lines)
