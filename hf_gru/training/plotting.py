"""Loss-curve plots from a `Trainer` log history (matplotlib, headless)."""

from pathlib import Path


def save_loss_curve(log_history: list[dict], path: str | Path, title: str = "training") -> Path | None:
    """Plots training and evaluation loss against the step; returns the PNG path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label in ((train, "train loss"), (evals, "eval loss")):
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
