"""``spikevid train``: train a model on the synthetic action dataset and save a checkpoint.

The defaults are the settings of the shipped checkpoint ``golden_model/checkpoints/<model>.pt``;
``--out`` defaults to ``<model>.pt`` in the current directory (never the shipped file unless
asked for explicitly).
"""

from __future__ import annotations

import argparse
import json
import sys


def _train(args) -> int:
    from golden_model.train import train

    log = None if args.quiet else (lambda s: print(s, file=sys.stderr if args.json else sys.stdout, flush=True))
    out = args.out if args.out is not None else f"{args.model}.pt"
    model, meta = train(args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, out_path=out, train_size=args.train_size,
                        test_size=args.test_size, data_seed=args.data_seed,
                        threads=args.threads if args.threads > 0 else None,
                        progress=not args.quiet and not args.no_progress, log=log)
    m = meta["metrics"]
    if args.json:
        summary = {"model": meta["model"], "checkpoint": meta.get("path"), "test_acc": m["test_acc"],
                   "train_acc": m["train_acc"], "epochs": m["epochs"], "train_size": m["train_size"],
                   "test_size": m["test_size"], "seed": m["seed"], "wall_s": m["wall_s"],
                   "train": meta["train"], "dataset": meta["dataset"]}
        print(json.dumps(summary, indent=2))
    else:
        print(f"{meta['model']}: test accuracy {m['test_acc']:.4f} on {m['test_size']} clips "
              f"(train {m['train_acc']:.4f}); checkpoint {meta.get('path')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from golden_model.train import train_defaults
    from golden_model.zoo import MODEL_NAMES

    tiny = ("svformer-tiny", "spikevideoformer-tiny")
    dflt = {n: train_defaults(n) for n in tiny}

    def h(key: str, what: str) -> str:
        return f"{what}default: " + ", ".join(f"{dflt[n][key]} ({n})" for n in tiny)

    p = sub.add_parser("train", help="train a model on the synthetic action dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="svformer-tiny", choices=MODEL_NAMES)
    p.add_argument("--epochs", type=int, default=None, help=h("epochs", ""))
    p.add_argument("--batch-size", type=int, default=None, help=h("batch_size", ""))
    p.add_argument("--lr", type=float, default=None, help=h("lr", "peak AdamW learning rate; "))
    p.add_argument("--seed", type=int, default=None, help=h("seed", "training seed; "))
    p.add_argument("--train-size", type=int, default=None, help=h("train_size", "training clips; "))
    p.add_argument("--test-size", type=int, default=None, help=h("test_size", "test clips; "))
    p.add_argument("--data-seed", type=int, default=0, help="dataset seed, default 0")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads while training (0: leave as is), default 1")
    p.add_argument("--out", default=None, help="checkpoint path, default ./<model>.pt")
    p.add_argument("--json", action="store_true", help="print a JSON summary (logs go to stderr)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="no logs or progress bars")
    p.set_defaults(func=_train)
