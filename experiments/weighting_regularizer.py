"""Loss / quality against training steps at equal compute: weighting uniform / min-snr / geometric and the
PIFS regulariser on / off, several seeds (theory section 6 II and section 2).

    python experiments/weighting_regularizer.py --data mnist:../shared/data/mnist --steps 2000 \
        --seeds 0 1 2 --out runs/ablation --classifier runs/mnist/classifier

Each variant is one `pifskit train` run (resumable); after training it samples 400 images
(50 DDIM steps) and reports the classifier-feature Frechet distance beside its real-vs-real floor.
Writes OUT/summary.json (one record per run) and prints a table. CPU defaults are small; the
regulariser costs ~n_blocks JVPs per regularised sample, so compare at equal wall time too
(``seconds`` in the summary).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "uniform": [],
    "min-snr": ["--weighting", "min-snr", "--gamma", "5"],
    "geometric": ["--weighting", "geometric"],
    "uniform+reg": ["--reg-weight", "0.1"],
}


def run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="dit")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--classifier", default=None, help="a `pifskit train-classifier` directory for the metric")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    pk = [sys.executable, "-m", "pifskit"]
    rows = []
    for variant in a.variants:
        for seed in a.seeds:
            out = Path(a.out) / f"{variant}-s{seed}"
            common = ["--steps", str(a.steps), "--threads", str(a.threads), "--log-every", "50", "--json"]
            if (out / "checkpoint.pt").exists():
                summ = run(pk + ["train", "--resume", str(out)] + common)
            else:
                summ = run(pk + ["train", "--data", a.data, "--holdout", "0.2", "--model", a.model, "--seed",
                                 str(seed), "--out", str(out)] + VARIANTS[variant] + common)
            rec = {"variant": variant, "seed": seed, "final_loss": summ["loss"], "seconds": summ["seconds"]}
            if a.classifier:
                smp = run(pk + ["sample", "--checkpoint", str(out), "--out", str(out / "samples"), "--n", "400",
                                "--steps", "50", "--clip", "--classifier", a.classifier, "--json"])
                q = smp["quality"]
                rec.update(fd=q["frechet_distance"], fd_floor=q["floor"]["frechet_distance"],
                           precision=q["precision"], recall=q["recall"])
            rows.append(rec)
            print(json.dumps(rec), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
