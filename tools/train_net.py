#!/usr/bin/env python
"""Train or evaluate any FastReID / fastreid-ext model: FastReID's tools/train_net.py, extended.

    python tools/train_net.py --config-file configs/Synthetic/bagtricks_R18.yml
    python tools/train_net.py --config-file X --eval-only MODEL.WEIGHTS path/to/model_final.pth
    python tools/train_net.py --config-file X --resume          # continue an interrupted run
    python tools/train_net.py --config-file X --num-gpus 4      # one process per GPU (CUDA only)

Every fastreid-ext component is registered before the config is read, and every fastreid-ext
config key exists (with its default) before the YAML is merged.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402  (compat layer + registration, before any fastreid.data import)
from fastreid.engine import default_argument_parser, default_setup, launch  # noqa: E402
from fastreid.utils.checkpoint import Checkpointer  # noqa: E402

from fastreid_ext.config import get_ext_cfg, merge_checked  # noqa: E402
from fastreid_ext.engine import ExtTrainer  # noqa: E402


def setup(args):
    """Config = FastReID defaults + fastreid-ext keys + YAML (with _BASE_) + command-line pairs."""
    cfg = get_ext_cfg()
    merge_checked(cfg, args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("--eval-only needs the weights to evaluate: add MODEL.WEIGHTS path/to/model.pth")
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.freeze()
        model = ExtTrainer.build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        return ExtTrainer.test(cfg, model)
    trainer = ExtTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_gpus(num_gpus: int) -> None:
    import torch

    if num_gpus > 1 and torch.cuda.device_count() < num_gpus:
        raise SystemExit(f"--num-gpus {num_gpus} needs {num_gpus} CUDA devices; "
                         f"found {torch.cuda.device_count()}. Use --num-gpus 1 (CPU or one GPU).")


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    check_gpus(args.num_gpus)
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
