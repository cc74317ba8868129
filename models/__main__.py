"""python -m models train [--out DIR] [--jobs N] [--small]
python -m models train-hypo [--out FILE]"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.train import DEFAULT_PLAN, small_plan, train

SHIPPED = Path(__file__).resolve().parent.parent / "edge_twin" / "assess" / "shipped"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description="Train the gateway's models: decompensation (ONNX + card), predicted low.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="simulate cohorts, train, calibrate, export")
    t.add_argument("--out", type=Path, default=SHIPPED, help=f"output directory ({SHIPPED})")
    t.add_argument("--jobs", type=int, default=2, help="processes for the simulation")
    t.add_argument("--small", action="store_true", help="a tiny plan, for trying the pipeline")
    h = sub.add_parser("train-hypo", help="train the predicted-low model (logistic, JSON)")
    h.add_argument("--out", type=Path, default=SHIPPED / "hypo_predictor.json")
    args = parser.parse_args()
    if args.command == "train-hypo":
        from models.hypo import train as train_hypo

        train_hypo(args.out)
        return
    plan = small_plan() if args.small else DEFAULT_PLAN
    train(args.out, plan, jobs=args.jobs)


if __name__ == "__main__":
    main()
