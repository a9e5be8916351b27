#!/usr/bin/env python
"""Train or evaluate any FastReID / fastreid-ext model: FastReID's tools/train_net.py, extended.

    python tools/train_net.py --config-file configs/Synthetic/bagtricks_R18.yml
    python tools/train_net.py --config-file X --eval-only MODEL.WEIGHTS path/to/model_final.pth
    python tools/train_net.py --config-file X --eval-only MODEL.WEIGHTS deploy/model.onnx  # tools/export.py's file
    python tools/train_net.py --config-file X --resume          # continue an interrupted run
    python tools/train_net.py --config-file X --num-gpus 4      # one process per GPU (CUDA only)
    python tools/train_net.py --config-file configs/UDA/synthetic_market_to_duke_R18.yml  # MMT adaptation

Every fastreid-ext component is registered before the config is read, and every fastreid-ext
config key exists (with its default) before the YAML is merged.

User errors (unknown config key or value, unknown dataset / model / loss name, missing file, weights
that do not fit the model or a file that is not a checkpoint) print ONE line, ``error: ...``, on stderr
and exit with status 2; ``--debug`` (or ``FASTREID_EXT_DEBUG=1``) shows the traceback instead. Which
exceptions count is the rule of :mod:`fastreid_ext.errors`; the phases it names are marked below
with ``user_input``. Anything else is a bug and raises with its traceback.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
from fastreid.engine import default_argument_parser, default_setup, launch  # noqa: E402
from fastreid.utils import comm  # noqa: E402
from fastreid.utils.logger import setup_logger  # noqa: E402

from fastreid_ext.config import get_ext_cfg, merge_checked  # noqa: E402
from fastreid_ext.data.build import resolve_attribute_fields  # noqa: E402
from fastreid_ext.engine import ExtTrainer  # noqa: E402
from fastreid_ext.engine.checkpoint import load_inference_weights  # noqa: E402
from fastreid_ext.engine.run_lock import OutputDirLock  # noqa: E402
from fastreid_ext.errors import UserError, debug_requested, run_cli, user_input  # noqa: E402
from fastreid_ext.export.runtime import is_exported_file, load_exported  # noqa: E402
from fastreid_ext.uda.trainer import UDATrainer  # noqa: E402

logger = logging.getLogger("fastreid_ext.train_net")


def setup(args):
    """Config = FastReID defaults + fastreid-ext keys + YAML (with _BASE_) + command-line pairs."""
    cfg = get_ext_cfg()
    merge_checked(cfg, args.config_file, args.opts)
    cfg.freeze()
    if not args.eval_only and comm.is_main_process() and cfg.OUTPUT_DIR:
        # one training run per OUTPUT_DIR, checked writable, before default_setup writes log.txt and
        # config.yaml there (ExtTrainer takes the same lock; the same process may take it twice)
        OutputDirLock(cfg.OUTPUT_DIR).acquire()
    default_setup(cfg, args)
    # fastreid-ext's own log lines (pseudo-label statistics, checkpoint notes) beside FastReID's, same files
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fastreid_ext",
                 abbrev_name="ext")
    return cfg


def main(args):
    with user_input("reading the config"):
        cfg = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS:
            raise UserError("--eval-only needs the weights to evaluate: add MODEL.WEIGHTS path/to/model.pth")
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.freeze()
        if is_exported_file(cfg.MODEL.WEIGHTS):  # tools/export.py's .onnx / .torchscript: the deployed artefact
            with user_input(f"loading the exported model {cfg.MODEL.WEIGHTS}"):
                cfg = resolve_attribute_fields(cfg)
                model = load_exported(cfg.MODEL.WEIGHTS, cfg)
            logger.info("evaluating %s through %s", cfg.MODEL.WEIGHTS, model.runtime_name)
            return ExtTrainer.test(cfg, model)
        with user_input("building the model"):
            cfg = resolve_attribute_fields(cfg)  # values derived from the data (the trainer does it when training)
            model = ExtTrainer.build_model(cfg)
        # the checkpoint must fit the model, except for parameters inference does not use
        load_inference_weights(model, cfg)
        return ExtTrainer.test(cfg, model)  # test sets: a user_input phase in ExtTrainer.build_test_loader
    with user_input("building the trainer (training set, model, optimizer)"):
        # DATASETS.TARGETS set: domain adaptation (MMT) on the same FastReID trainer, plus its hooks
        trainer = UDATrainer(cfg) if cfg.DATASETS.TARGETS else ExtTrainer(cfg)
    with user_input("loading the weights"):
        trainer.resume_or_load(resume=args.resume)  # --resume: strict; MODEL.WEIGHTS: lenient, one summary line
    return trainer.train()


def worker(args):
    """``main`` in each launched process. With several processes, the process that meets a user error
    prints its ``error:`` line and exits with status 2, which :func:`run` passes on."""
    if args.num_gpus * args.num_machines > 1 and not debug_requested(args.debug):
        code = run_cli(lambda: main(args))
        if code:
            sys.exit(code)
        return None
    return main(args)


def run(args):
    try:
        launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except Exception as e:  # noqa: BLE001 - only a child's reported user error is handled here
        if getattr(e, "exit_code", None) == 2:  # torch.multiprocessing.ProcessExitedException
            raise SystemExit(2) from None
        raise


def check_gpus(num_gpus: int) -> None:
    import torch

    if num_gpus > 1 and torch.cuda.device_count() < num_gpus:
        raise UserError(f"--num-gpus {num_gpus} needs {num_gpus} CUDA devices; "
                        f"found {torch.cuda.device_count()}. Use --num-gpus 1 (CPU or one GPU).")


def argument_parser():
    """FastReID's ``default_argument_parser`` plus ``--debug``."""
    parser = default_argument_parser()
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors (config, data, weights) instead of one "
                             "'error:' line; also FASTREID_EXT_DEBUG=1")
    return parser


def parse_args(argv=None):
    args = argument_parser().parse_args(argv)
    if "--debug" in (args.opts or []):  # after the KEY VALUE pairs, argparse leaves it in opts
        args.opts = [o for o in args.opts if o != "--debug"]
        args.debug = True
    return args


if __name__ == "__main__":
    args = parse_args()
    print("Command Line Args:", args)

    def _cli():
        check_gpus(args.num_gpus)
        run(args)

    sys.exit(run_cli(_cli, debug=args.debug))
