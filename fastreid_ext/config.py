"""Every config key fastreid-ext adds, with its default. One line of comment documents each key.

Use ``get_ext_cfg()`` (FastReID's defaults + ours) or ``add_ext_config(cfg)`` on a FastReID cfg
*before* ``merge_from_file`` (yacs rejects unknown keys). YAMLs in ``configs/`` override these,
they never invent keys.
"""

from __future__ import annotations

import difflib
import os

import torch
from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg

#: per-image fields a dataset can put in the batch besides images/targets/camids/img_paths.
EXTRA_FIELDS = ("attributes", "keypoints", "heatmaps")


def add_ext_config(cfg: CN) -> CN:
    """Add fastreid-ext's keys (with defaults) to a FastReID config, in place; returns it.

    Also registers every fastreid-ext component (:func:`fastreid_ext.register`), so any flow that
    builds a config with our keys finds our datasets and models in FastReID's registries."""
    from . import register  # function-level: fastreid_ext/__init__ is light and imports no config

    register()
    if hasattr(cfg, "EXT"):
        return cfg
    cfg.EXT = CN()
    # version of the config schema, bumped when keys change meaning
    cfg.EXT.VERSION = 1

    # default device: CUDA when present, else CPU (FastReID's default "cuda" fails on CPU machines)
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

    # ---------------------------------------------------------------- datasets
    # folder holding the dataset folders; "" = $FASTREID_DATASETS or ./datasets (FastReID's rule)
    cfg.DATASETS.ROOT = ""
    # folder of person_keypoints_<split folder>.json for keypoints/heatmaps (any dataset); "" = <dataset folder>/keypoints/
    cfg.DATASETS.KEYPOINTS_DIR = ""
    # scan every image before training/evaluation (header + end-of-data check, cached by size/mtime; data/image_check.py)
    cfg.DATASETS.CHECK_IMAGES = True
    # with CHECK_IMAGES: drop unreadable images and list them in a warning, instead of stopping with the list
    cfg.DATASETS.SKIP_UNREADABLE = False

    # ---------------------------------------------------------------- per-image extra fields
    # extra per-image tensors carried in the batch: any of "attributes", "keypoints", "heatmaps"
    cfg.INPUT.EXTRA_FIELDS = []
    cfg.INPUT.HEATMAP = CN()
    # heatmap size [H, W]; [0, 0] = half the input size (RBNet's 128x64 for 256x128 input)
    cfg.INPUT.HEATMAP.SIZE = [0, 0]
    # Gaussian sigma of a keypoint heatmap, in heatmap pixels (MSRA heatmaps, mmpose uses 2)
    cfg.INPUT.HEATMAP.SIGMA = 2.0
    # where heatmaps come from: "render" (Gaussians at the keypoints) or "stored" (a pose model's own
    # heatmaps written by tools/make_keypoints.py --save-heatmaps; moved with the pixels the same way)
    cfg.INPUT.HEATMAP.SOURCE = "render"

    # ---------------------------------------------------------------- training loop
    # random seed of the run (python, numpy, torch; rank added per process); -1 = a fresh random seed,
    # FastReID's behaviour. Data order after --resume is drawn anew either way
    cfg.SEED = -1
    # iterations between log lines / metrics.json / tensorboard writes (FastReID hard-codes 200)
    cfg.SOLVER.LOG_PERIOD = 20

    # attribute annotation file for the *Attr datasets; "" = the dataset's default location
    cfg.DATASETS.ATTRIBUTE_FILE = ""

    # ---------------------------------------------------------------- losses (registry: modeling/losses)
    # weights of the project's registered losses; FastReID's own keep their MODEL.LOSSES.CE/TRI/... keys
    cfg.MODEL.LOSSES.ATTR = CN()
    # AttributeCrossEntropyLoss (APR, AANet attribute heads): scale
    cfg.MODEL.LOSSES.ATTR.SCALE = 1.0
    cfg.MODEL.LOSSES.MSE = CN()
    # KeypointMSELoss (RBNet eq. 3, masked heatmap MSE): scale (the paper's l3)
    cfg.MODEL.LOSSES.MSE.SCALE = 1.0
    cfg.MODEL.LOSSES.SOFT_CE = CN()
    # SoftCrossEntropyLoss (MMT, soft identity loss from the peer's mean net): scale
    cfg.MODEL.LOSSES.SOFT_CE.SCALE = 1.0
    cfg.MODEL.LOSSES.SOFT_TRI = CN()
    # SoftTripletLoss (MMT): L2-normalise student and teacher features first
    cfg.MODEL.LOSSES.SOFT_TRI.NORM_FEAT = False
    # SoftTripletLoss (MMT): scale
    cfg.MODEL.LOSSES.SOFT_TRI.SCALE = 1.0

    # ---------------------------------------------------------------- attributes (APR, AANet)
    cfg.MODEL.ATTRIBUTES = CN()
    # attribute fields of the batch's `attributes`, in the attribute file's order. Derived from the data:
    # [] = filled in from the training set's attribute file when the trainer / tools start
    # (data.build.resolve_attribute_fields) and written to the run's config.yaml; a list that differs
    # from the file's fields or order is an error
    cfg.MODEL.ATTRIBUTES.FIELDS = []
    # one 8-/9-way head per colour group instead of one binary head per colour field
    cfg.MODEL.ATTRIBUTES.GROUP_COLOURS = False

    # ---------------------------------------------------------------- APR (issue 3)
    cfg.MODEL.APR = CN()
    # lambda: weight of the identity loss in lambda * L_id + mean_j L_att_j (paper: 8)
    cfg.MODEL.APR.ID_WEIGHT = 8.0
    # use the Attribute Re-weighting Module (False: plain concatenation of attribute scores)
    cfg.MODEL.APR.ARM = True
    # ARM input a': "positive" = P(second class) of each 2-way head + all K probs of K>2-way heads; "all" = every class prob
    cfg.MODEL.APR.ARM_INPUT = "positive"
    # retrieval feature at test: "global" (the paper's CNN embedding) or "global_attr" ([global, re-weighted a])
    cfg.MODEL.APR.TEST_FEATURE = "global"

    # ---------------------------------------------------------------- AANet (issue 3)
    cfg.MODEL.AANET = CN()
    # number of body parts of the Part Feature Network
    cfg.MODEL.AANET.NUM_PARTS = 6
    # channels after the 1x1 reduction in GFN / PFN / AFN
    cfg.MODEL.AANET.REDUCTION_DIM = 256
    # learn homoscedastic-uncertainty task weights (False: plain sum of the task losses)
    cfg.MODEL.AANET.UNCERTAINTY = True

    # ---------------------------------------------------------------- attribute evaluation
    cfg.TEST.ATTRIBUTES = CN()
    # report attribute metrics (Market protocol, mA, instance F1) when batches carry attributes
    cfg.TEST.ATTRIBUTES.ENABLED = True
    cfg.TEST.ATTR_FILTER = CN()
    # APR's attribute-filtered retrieval: also rank each query against only the gallery images
    # whose confident attribute predictions agree with its own, and report the saving and the cost
    cfg.TEST.ATTR_FILTER.ENABLED = False
    # a prediction is confident when its class probability reaches this (paper: 0.7)
    cfg.TEST.ATTR_FILTER.THRESHOLD = 0.7
    # False (paper): filter on the model's own heads (APR: one binary head per colour field). True: on
    # the colour-grouped heads (binary per-colour heads become one 8-/9-way distribution,
    # evaluation.attr_evaluation.grouped_probabilities); measured on the synthetic set it excludes
    # less at the same threshold and loses more Rank-1 at the same reduction (README)
    cfg.TEST.ATTR_FILTER.GROUP_COLOURS = False
    # search plan (evaluation.attr_filter.FilteredSearch): "exact" computes exactly the kept pairs
    # (distance computations == kept gallery); "auto" may compute a superset of them in fewer, larger
    # products when its cost model says that is faster (CPU wall clock)
    cfg.TEST.ATTR_FILTER.PLAN = "auto"

    # ---------------------------------------------------------------- HA-CNN (issue 4)
    cfg.MODEL.HACNN = CN()
    # dimension of the global and of the local feature (the test feature is twice this)
    cfg.MODEL.HACNN.FEAT_DIM = 512
    # learn the hard-attention translations (False: keep the published initial boxes)
    cfg.MODEL.HACNN.LEARN_REGION = True
    # use the local (hard attention) branch; False = global branch only (512-d feature)
    cfg.MODEL.HACNN.USE_LOCAL = True
    # output channels of the three Inception + HarmAttn blocks (paper: 128, 256, 384)
    cfg.MODEL.HACNN.CHANNELS = [128, 256, 384]
    # number of hard-attention regions T (horizontal stripes of height 1/T)
    cfg.MODEL.HACNN.NUM_REGIONS = 4
    # channel-attention reduction ratio (squeeze-and-excitation style)
    cfg.MODEL.HACNN.REDUCTION = 16

    # ---------------------------------------------------------------- RBNet (issue 10; modeling/meta_arch/rbnet.py)
    cfg.MODEL.RBNET = CN()
    # blocks of re-layers 1-4; [] = one fewer than the backbone's stages (ResNet-50: [2, 3, 5, 2], the paper's Table 1)
    cfg.MODEL.RBNET.RELAYER_BLOCKS = []
    # where the mask M(x) is taken (paper Table 2): "relayer1" (best), "conv1" (re-conv-1 input) or "relayer2"
    cfg.MODEL.RBNET.MASK_SOURCE = "relayer1"
    # decoder levels fused (grouped 1x1 conv, 17 groups) into the heatmaps: any of conv1, relayer1..relayer4 (paper: conv1 + relayer1)
    cfg.MODEL.RBNET.FUSE_LEVELS = ["conv1", "relayer1"]
    # channels per keypoint group of each fused level after its change-channel block
    cfg.MODEL.RBNET.GROUP_WIDTH = 2
    # re-conv-1 output stride: 2 = half the input (eq. 3, 128x64 for 256x128), 1 = full input (Table 1)
    cfg.MODEL.RBNET.HEATMAP_STRIDE = 2
    # retrieval feature: "both" ([backbone 1, backbone 2] embeddings), "backbone1" or "backbone2" (x * M(x))
    cfg.MODEL.RBNET.TEST_FEATURE = "both"
    # eq. 4 weights: l1 L_id, l2 L_tri (backbone 1), l3 L_mse, l4 L_id2, l5 L_tri2 (backbone 2); each on top of the loss's own SCALE
    cfg.MODEL.RBNET.WEIGHTS = CN()
    cfg.MODEL.RBNET.WEIGHTS.ID = 1.0
    cfg.MODEL.RBNET.WEIGHTS.TRI = 1.0
    cfg.MODEL.RBNET.WEIGHTS.MSE = 1000.0
    cfg.MODEL.RBNET.WEIGHTS.ID2 = 1.0
    cfg.MODEL.RBNET.WEIGHTS.TRI2 = 1.0
    # "fixed": l3 = WEIGHTS.MSE; "match_triplet": l3 follows l2 * EMA(L_tri) / EMA(L_mse) (the paper tunes l3 by hand so the two are close)
    cfg.MODEL.RBNET.MSE_WEIGHT_MODE = "fixed"
    # momentum of those running means (match_triplet); l3 is clamped to [1, 1e6]
    cfg.MODEL.RBNET.MSE_WEIGHT_MOMENTUM = 0.99

    # ---------------------------------------------------------------- MMT, domain adaptation (issue 11)
    # DATASETS.NAMES = labelled source, DATASETS.TARGETS = unlabelled target train sets (their identity
    # labels are never read), DATASETS.TESTS = evaluation. TARGETS non-empty = adaptation (uda.UDATrainer)
    cfg.DATASETS.TARGETS = ()
    cfg.MODEL.MMT = CN()
    # meta-architecture of the four nets (net1, net2 and their mean nets): "Baseline" or "RBNet"
    cfg.MODEL.MMT.NET = "Baseline"
    # EMA momentum of the mean nets (eq. 5-6), with MMT's warm-up min(1 - 1/(step + 1), ALPHA)
    cfg.MODEL.MMT.ALPHA = 0.999
    cfg.MODEL.MMT.WEIGHTS = CN()
    # hard identity loss (CrossEntropyLoss on the pseudo-labels); MMT: 1 - 0.5
    cfg.MODEL.MMT.WEIGHTS.CE = 0.5
    # hard triplet loss (TripletLoss, MARGIN 0 = softplus(d_ap - d_an)); MMT: 1 - 0.8
    cfg.MODEL.MMT.WEIGHTS.TRI = 0.2
    # soft identity loss from the peer's mean net (SoftCrossEntropyLoss); MMT: 0.5
    cfg.MODEL.MMT.WEIGHTS.SOFT_CE = 0.5
    # soft triplet loss from the peer's mean net (SoftTripletLoss); MMT: 0.8
    cfg.MODEL.MMT.WEIGHTS.SOFT_TRI = 0.8
    # the net whose features are reported and exported: net1, net2, mean1 (MMT), mean2; never chosen on the target test set
    cfg.MODEL.MMT.TEST_NET = "mean1"
    # branches the soft losses teach: "masked" (RBNet's backbone 2 on x * M(x), eq. 7-11; a Baseline's only branch) or "all"
    cfg.MODEL.MMT.SOFT_BRANCHES = "masked"
    # RBNet's keypoint loss while adapting: "source" (a labelled source batch per step), "target" (the
    # target's own keypoint files, from tools/make_keypoints.py), "none"
    cfg.MODEL.MMT.KEYPOINTS = "source"
    # images per source batch with MODEL.MMT.KEYPOINTS source
    cfg.MODEL.MMT.SOURCE_IMS_PER_BATCH = 16
    # source weights of net 2 / mean net 2; "" = MODEL.WEIGHTS for both nets (they then differ by their random streams)
    cfg.MODEL.MMT.WEIGHTS2 = ""

    # ---------------------------------------------------------------- NPSM person search (issue 12; modeling/meta_arch/npsm.py)
    cfg.MODEL.NPSM = CN()
    # where the ResNet is split: stem .. SPLIT = primitive memory (query and frame maps), the rest + head = re-id
    # feature; "layer2" (stride 8, our choice: small people keep 5+ cells) or "layer3" (stride 16)
    cfg.MODEL.NPSM.SPLIT = "layer2"
    # shrinkage steps T (the paper does not give it; a region that cannot shrink is kept)
    cfg.MODEL.NPSM.STEPS = 4
    # sub-regions per step: k-means clusters of the proposal centres inside the region
    cfg.MODEL.NPSM.CLUSTERS = 4
    # K of the K x K ROI-pooled map the Conv-LSTM reads and the attention covers
    cfg.MODEL.NPSM.POOL_SIZE = 8
    # ROI size [h, w] of the final region on the early map (input to the late layers): the crop size / stride
    cfg.MODEL.NPSM.REID_POOL = [16, 8]
    # Conv-LSTM hidden channels
    cfg.MODEL.NPSM.HIDDEN = 64
    # one more Conv-LSTM input channel (our addition): "reid" = cosine similarity of the frame's late-layer map
    # (the re-id half run over the whole frame, no gradient) with the query's pooled late-layer feature,
    # ROI-aligned like the early map; "early" = the same on the early map; "none" = the paper's cell alone
    cfg.MODEL.NPSM.SIMILARITY_INPUT = "reid"
    # proposals covering more than this fraction of the region take no part in its clustering
    cfg.MODEL.NPSM.MAX_AREA_FRACTION = 0.8
    # the last step's candidates: "proposals" (the region's proposals themselves, clusters of one; trained with
    # cost 1 - IoU, our choice: clustered unions are rarely tight) or "clusters" (like every other step)
    cfg.MODEL.NPSM.FINAL_STEP = "proposals"
    # multiplier of the attention logits and of the similarity channel (our choice: gives the search's few
    # weights the reach that Adam's bounded steps deny them at re-id learning rates)
    cfg.MODEL.NPSM.GAIN = 10.0
    # a shrinkage step's sub-region score: "mean" attention inside it (the paper) or "mass" (our choice: the
    # attention mass it keeps - AREA_WEIGHT x its share of the region's area; keeps the person whole, README)
    cfg.MODEL.NPSM.SUBREGION_SCORE = "mean"
    # the area cost of SUBREGION_SCORE "mass" (ties between sub-regions that keep all the attention: the smaller)
    cfg.MODEL.NPSM.AREA_WEIGHT = 0.1
    # weight of the identity losses on the query crop (0 = on the final region only, the paper)
    cfg.MODEL.NPSM.QUERY_ID_WEIGHT = 1.0
    cfg.MODEL.LOSSES.BOX_INSIDE = CN()
    # BoxInsideLoss (NPSM: ground truth left outside the region): scale
    cfg.MODEL.LOSSES.BOX_INSIDE.SCALE = 1.0
    cfg.INPUT.SEARCH = CN()
    # person search: every frame is resized to this [H, W] (boxes and proposals with it); [0, 0] = as stored
    # (all frames of a batch must then have one size)
    cfg.INPUT.SEARCH.FRAME_SIZE = [0, 0]
    # horizontal flip probability of a training frame (its query crop gets FastReID's crop augmentations)
    cfg.INPUT.SEARCH.FLIP_PROB = 0.5
    cfg.DATASETS.SEARCH = CN()
    # folder of the proposal cache (selective search, computed once, resumable); "" = <dataset folder>/proposals
    cfg.DATASETS.SEARCH.PROPOSALS_DIR = ""
    # CUHK-SYSU gallery size: TestG<N>.mat, N in 50, 100, 500, 1000, 2000, 4000
    cfg.DATASETS.SEARCH.GALLERY_SIZE = 100
    # PRW (and the synthetic scenes): search only frames of other cameras than the query's
    cfg.DATASETS.SEARCH.MULTI_CAMERA = False
    # gallery frames per test batch (each batch searches them for every query whose gallery holds them)
    cfg.TEST.SEARCH = CN()
    cfg.TEST.SEARCH.FRAMES_PER_BATCH = 4

    cfg.UDA = CN()
    # iterations per adaptation epoch (pseudo-labels are recomputed at each epoch start); MMT: 400
    cfg.UDA.ITERS_PER_EPOCH = 400
    # how the reported model is chosen: "last" (model_final, the last epoch); the target test set never selects
    cfg.UDA.REPORTED_MODEL = "last"
    # periodic adaptation checkpoints kept (the newest; each holds four nets + the optimizer); model_final is always kept
    cfg.UDA.KEEP_CHECKPOINTS = 2
    # write the per-epoch pictures (cluster statistics plot, PCA of target features by pseudo-label)
    cfg.UDA.PLOTS = True
    cfg.UDA.CLUSTER = CN()
    # DBSCAN eps on the Jaccard distance; 0 = chosen at the first epoch by the RHO rule and kept (stored in checkpoints)
    cfg.UDA.CLUSTER.EPS = 0.0
    # the eps rule: mean of the smallest RHO fraction of pairwise distances (MMT: 1.6e-3)
    cfg.UDA.CLUSTER.RHO = 1.6e-3
    # > 0: use RHO * RHO_REF_N / N for a target of N images, i.e. the same number of smallest distances per
    # image as MMT's rule at N = RHO_REF_N (MMT tuned 1.6e-3 on ~13k images; the literal rule picks a far
    # tighter eps on small targets and a looser one on large ones); 0 = RHO as given (MMT)
    cfg.UDA.CLUSTER.RHO_REF_N = 0
    # k-reciprocal neighbours k1 and query-expansion k2 of the Jaccard distance (MMT: 30, 6)
    cfg.UDA.CLUSTER.K1 = 30
    cfg.UDA.CLUSTER.K2 = 6
    # DBSCAN min_samples (MMT: 4)
    cfg.UDA.CLUSTER.MIN_SAMPLES = 4
    cfg.UDA.PRETRAIN = CN()
    # source pre-training when MODEL.WEIGHTS is empty: one run per seed (MMT: two), in OUTPUT_DIR/source_pretrain/seed<S>
    cfg.UDA.PRETRAIN.SEEDS = [1, 2]
    # its epochs, LR steps and warm-up (the adaptation uses SOLVER.*); MMT: 80, [40, 70]
    cfg.UDA.PRETRAIN.MAX_EPOCH = 80
    cfg.UDA.PRETRAIN.STEPS = [40, 70]
    cfg.UDA.PRETRAIN.WARMUP_ITERS = 0
    # its checkpoint period in epochs (the adaptation's SOLVER.CHECKPOINT_PERIOD is per epoch: too many here)
    cfg.UDA.PRETRAIN.CHECKPOINT_PERIOD = 10
    # further KEY VALUE overrides for pre-training only (e.g. its losses)
    cfg.UDA.PRETRAIN.OPTS = []
    return cfg


def get_ext_cfg() -> CN:
    """FastReID's default config with fastreid-ext's keys added (and every component registered)."""
    return add_ext_config(get_cfg())


def dataset_root(cfg: CN) -> str:
    """The folder datasets are looked up in: DATASETS.ROOT, else $FASTREID_DATASETS, else ./datasets."""
    return cfg.DATASETS.ROOT or os.getenv("FASTREID_DATASETS", "datasets")


def _all_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, CN):
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


def unknown_key_message(cfg: CN, key: str, source: str) -> str:
    """A readable 'unknown key' error with the closest known keys."""
    close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{source}: unknown config key '{key}'.{hint}"


def merge_checked(cfg: CN, config_file: str = "", opts: list | None = None) -> CN:
    """``merge_from_file`` + ``merge_from_list`` with errors that name the file and the key."""
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except KeyError as e:
            key = str(e).strip("'\"").replace("Non-existent config key: ", "")
            raise KeyError(unknown_key_message(cfg, key, f"config file {config_file}")) from None
    if opts:
        if len(opts) % 2:
            raise ValueError(f"command-line overrides must be KEY VALUE pairs, got {opts}")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as e:
            key = str(e).strip("'\"").replace("Non-existent key: ", "").replace("Non-existent config key: ", "")
            raise KeyError(unknown_key_message(cfg, key, "command line")) from None
    validate_config(cfg)
    return cfg


def validate_config(cfg: CN) -> None:
    """Reject settings FastReID would silently misuse."""
    from .modeling.losses import registered_losses  # the loss registry is the one list of names

    bad = [n for n in cfg.MODEL.LOSSES.NAME if n not in registered_losses()]
    if bad:
        raise ValueError(f"MODEL.LOSSES.NAME has {bad}, which no registered loss is called; registered losses: "
                         f"{registered_losses()}")
    bad = [f for f in cfg.INPUT.EXTRA_FIELDS if f not in EXTRA_FIELDS]
    if bad:
        raise ValueError(f"INPUT.EXTRA_FIELDS has {bad}; known: {list(EXTRA_FIELDS)}")
    if cfg.INPUT.HEATMAP.SOURCE not in ("render", "stored"):
        raise ValueError(f"INPUT.HEATMAP.SOURCE is {cfg.INPUT.HEATMAP.SOURCE!r}; use 'render' (Gaussians at the keypoints) "
                         "or 'stored' (tools/make_keypoints.py --save-heatmaps)")
    flt = cfg.TEST.ATTR_FILTER
    if flt.PLAN not in ("auto", "exact"):
        raise ValueError(f"TEST.ATTR_FILTER.PLAN is {flt.PLAN!r}; use 'auto' or 'exact'")
    if flt.ENABLED and not 0.0 <= flt.THRESHOLD <= 1.0:
        raise ValueError(f"TEST.ATTR_FILTER.THRESHOLD is {flt.THRESHOLD}; a class probability threshold in [0, 1]")
    if flt.ENABLED and not ("attributes" in cfg.INPUT.EXTRA_FIELDS and cfg.TEST.ATTRIBUTES.ENABLED):
        raise ValueError("TEST.ATTR_FILTER.ENABLED needs attribute labels and predictions: add 'attributes' to "
                         "INPUT.EXTRA_FIELDS, keep TEST.ATTRIBUTES.ENABLED and use an attribute model (APR, AANet)")
    dev = str(cfg.MODEL.DEVICE)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE is '{dev}' but no CUDA device is available; "
                         "use MODEL.DEVICE cpu")
