"""Attribute annotation files in the official Market-1501 / DukeMTMC-reID ``.mat`` layout.

The files (``market_attribute.mat``, ``duke_attribute.mat``; the synthetic set writes the same layout)
hold one MATLAB struct named after the dataset with ``train`` and ``test`` sub-structs; each has one
field per attribute (a 1 x N row, one value per identity) and ``image_index`` (the N identities as
4-digit strings). Values: 1 = no / first class, 2 = yes / second class, Market ``age`` 1..4, and 0 =
not labelled (Duke ``top`` for two train ids). The field ORDER differs between ``train`` and ``test``,
so everything here is indexed by field name.

Encoding used in batches: class index = value - 1 (so binary attributes are 0/1 and age is 0..3),
and -1 for "not labelled" (value 0), which losses and metrics must ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = -1  # encoded value of an unlabelled attribute


@dataclass
class AttributeTable:
    """Identity-level attributes of one annotation file.

    ``names``: attribute field names in a fixed order (the train split's order in the file);
    ``values[split][pid]``: raw file values (int64 array aligned with ``names``).
    """

    path: str
    struct_name: str
    names: list[str]
    values: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def encoded(self, split: str, pid: int) -> np.ndarray:
        """Class indices (value - 1; -1 = unlabelled) of identity ``pid`` in ``split``."""
        raw = self.values[split][pid]
        return np.where(raw > 0, raw - 1, IGNORE).astype(np.int64)

    def per_image(self, split: str, pids, what: str = "dataset") -> list[np.ndarray]:
        """Encoded attributes for each image's identity ``pids`` (file-name pids) in ``split``;
        distractors/junk (pid <= 0) get all -1. Raises (naming them) for identities the file lacks."""
        pids = [int(p) for p in pids]
        self.require(split, {p for p in pids if p > 0}, what)
        none = np.full(len(self.names), IGNORE, np.int64)
        return [self.encoded(split, p) if p > 0 else none.copy() for p in pids]

    def num_classes(self) -> list[int]:
        """Number of classes per attribute (largest value seen in any split)."""
        allv = np.concatenate([np.stack(list(v.values())) for v in self.values.values() if v])
        return [int(max(2, allv[:, i].max())) for i in range(len(self.names))]

    def require(self, split: str, pids, what: str = "dataset") -> None:
        """Raise a clear error if some identities of ``what`` have no attributes in ``split``."""
        missing = sorted(set(int(p) for p in pids) - set(self.values[split]))
        if missing:
            shown = ", ".join(f"{p:04d}" for p in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise ValueError(f"attribute file {self.path}: split '{split}' has no entry for "
                             f"{len(missing)} identities of {what}: {shown}")


def load_attribute_mat(path: str) -> AttributeTable:
    """Read an official-layout attribute ``.mat`` file by field name (see module docstring)."""
    import scipy.io as sio

    try:
        mat = sio.loadmat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"attribute file not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - scipy raises several types for bad files
        raise ValueError(f"attribute file {path} is not a readable MATLAB file: {e}") from None
    structs = [k for k in mat if not k.startswith("__")]
    if len(structs) != 1:
        raise ValueError(f"attribute file {path}: expected one struct, found {structs}")
    name = structs[0]
    top = mat[name]
    if top.dtype.names is None or not {"train", "test"} <= set(top.dtype.names):
        raise ValueError(f"attribute file {path}: struct '{name}' must have 'train' and 'test' fields")
    table = None
    for split in ("train", "test"):
        s = top[split][0, 0]
        fields = [f for f in s.dtype.names if f != "image_index"]
        if "image_index" not in s.dtype.names:
            raise ValueError(f"attribute file {path}: '{name}.{split}' has no image_index field")
        if table is None:
            table = AttributeTable(path=path, struct_name=name, names=fields)
        elif set(fields) != set(table.names):
            raise ValueError(f"attribute file {path}: train and test fields differ: "
                             f"{sorted(set(fields) ^ set(table.names))}")
        ids = [int(str(np.asarray(x).ravel()[0])) for x in s["image_index"][0, 0].ravel()]
        cols = np.stack([np.asarray(s[f][0, 0]).ravel().astype(np.int64) for f in table.names], axis=1)
        if cols.shape[0] != len(ids):
            raise ValueError(f"attribute file {path}: '{split}' has {len(ids)} ids but {cols.shape[0]} values")
        table.values[split] = {pid: cols[i] for i, pid in enumerate(ids)}
    return table


# ------------------------------------------------------------------------------------------------
# Attribute heads: how the per-field labels in a batch become classification targets
# ------------------------------------------------------------------------------------------------
#: fields with more than two classes (value range 1..K in the files)
MULTICLASS = {"age": 4}


@dataclass(frozen=True)
class AttributeHead:
    """One attribute classifier: ``name``, ``num_classes`` and the file fields it reads.

    A plain head reads one field (class = encoded value). A colour-group head reads K one-hot
    "yes/no" fields (e.g. the 8 ``up*`` fields) and its class is the index of the single "yes";
    zero or several "yes" (Duke's colour groups are not strictly one-hot) -> ignored (-1).
    """

    name: str
    num_classes: int
    fields: tuple

    @property
    def is_group(self) -> bool:
        return len(self.fields) > 1


class AttributeSchema:
    """Maps per-field labels (the batch's ``attributes``, (B, F) int64, -1 = unlabelled) to the
    targets of each attribute head.

    ``group_colours=False``: one head per field (Market: 27 heads, age 4-way, the rest binary; the
    APR paper's setting). ``group_colours=True``: the ``up*`` / ``down*`` colour fields become one
    8-way / 9-way head each (Market: the 12 attributes of the official protocol).
    """

    COLOUR_PREFIXES = ("up", "down")
    NOT_COLOURS = {"up", "down"}  # Market's sleeve / lower-body length fields

    def __init__(self, fields, group_colours: bool = False):
        self.fields = list(fields)
        self.group_colours = group_colours
        heads, grouped = [], {p: [] for p in self.COLOUR_PREFIXES}
        for f in self.fields:
            prefix = next((p for p in self.COLOUR_PREFIXES if f.startswith(p) and f not in self.NOT_COLOURS), None)
            if group_colours and prefix is not None:
                grouped[prefix].append(f)
            else:
                heads.append(AttributeHead(f, MULTICLASS.get(f, 2), (f,)))
        for p, fs in grouped.items():
            if fs:
                heads.append(AttributeHead(f"{p}color", len(fs), tuple(fs)))
        self.heads = heads
        self._index = {f: i for i, f in enumerate(self.fields)}

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.heads]

    def grouped(self) -> "AttributeSchema":
        """The colour-grouped schema of the same fields (itself when already grouped)."""
        return self if self.group_colours else AttributeSchema(self.fields, group_colours=True)

    @property
    def num_classes(self) -> list[int]:
        return [h.num_classes for h in self.heads]

    def __len__(self) -> int:
        return len(self.heads)

    def targets(self, attributes):
        """(B, F) per-field labels -> (B, H) head targets, -1 where ignored (torch or numpy)."""
        import torch

        attributes = torch.as_tensor(attributes)
        if attributes.dim() != 2 or attributes.size(1) != len(self.fields):
            raise ValueError(f"attributes of shape {tuple(attributes.shape)} do not match the schema's "
                             f"{len(self.fields)} fields {self.fields}")
        cols = []
        for h in self.heads:
            idx = [self._index[f] for f in h.fields]
            if not h.is_group:
                cols.append(attributes[:, idx[0]])
                continue
            sub = attributes[:, idx]
            yes = sub == 1
            single = yes.sum(1) == 1
            cols.append(torch.where(single, yes.float().argmax(1), torch.full_like(sub[:, 0], IGNORE)))
        return torch.stack(cols, 1).long()
