"""Person search data (issue 12): whole frames with annotated people, in the benchmarks' own formats.

* :mod:`.prw`: PRW (frames/, annotations/*.jpg.mat, frame_{train,test}.mat, query_info.txt).
* :mod:`.cuhk_sysu`: CUHK-SYSU (Image/SSM/, annotation/Images.mat, pool.mat, test/train_test/Train.mat,
  TestG50..4000.mat).
* :mod:`.common`: boxes (IoU) and frame names.

The synthetic scenes (:mod:`fastreid_ext.data.synthetic.scenes`) are written in PRW's format and read by
the same reader. Light on import: numpy / scipy only.
"""

from .common import box_iou, prw_camera
from .prw import UNLABELLED, SceneFrame, SearchQuery, SearchSet, read_prw, write_prw_annotation
from .cuhk_sysu import GALLERY_SIZES, convert_to_cuhk_sysu, read_cuhk_sysu, write_cuhk_sysu

__all__ = ["GALLERY_SIZES", "UNLABELLED", "SceneFrame", "SearchQuery", "SearchSet", "box_iou",
           "convert_to_cuhk_sysu", "prw_camera", "read_cuhk_sysu", "read_prw", "write_cuhk_sysu", "write_prw_annotation"]
