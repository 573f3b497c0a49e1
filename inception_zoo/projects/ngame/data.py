"""Data of NGAME (Dahiya et al., WSDM 2023): readers of the Extreme Classification Repository's LF-*
datasets as the official code reads them (Extreme-classification/ngame, `tools/create_tokenized_files.py`,
`libs/model.py`), and the synthetic extreme-classification set of the CPU setting.

LF-* layout (e.g. LF-AmazonTitles-131K/): `trn_X_Y.txt` / `tst_X_Y.txt`, sparse label matrices as text,
a header line "num_points num_labels" then one line per point of space-separated "label:value" pairs
(an empty line: no labels); `trn.raw.txt`, `tst.raw.txt`, `lbl.raw.txt`, one title per line, read as
latin-1; `filter_labels_test.txt`, "test_point label" pairs removed from the predictions before scoring
(reciprocal pairs, where a product is its own related product).

Synthetic set (our construction, for the CPU claim): labels are Gaussian centroids in groups (a group
centroid plus a smaller per-label offset), so labels of the same group are hard negatives of each other;
a point has a primary label drawn from a long-tailed (Zipf) popularity, plus Poisson-many siblings from
its group, and its features are the mean of its labels' centroids plus noise, concatenated with nuisance
dimensions that the encoder has to learn to ignore; a label's features are its centroid plus noise and
nuisance.
"""
import os
from typing import Dict, List

import numpy as np
import scipy.sparse as sp

from inception_zoo.errors import UserError


def read_label_matrix(path: str) -> sp.csr_matrix:
  """An XC-repository sparse matrix file ("n m" header, "j:v" pairs per row) as a CSR matrix."""
  if not os.path.exists(path):
    raise UserError(f"label file {path} does not exist")
  with open(path, encoding="latin-1") as f:
    header = f.readline().split()
    if len(header) != 2:
      raise UserError(f"{path}: the header should be 'num_points num_labels', got {' '.join(header)!r}")
    n, m = map(int, header)
    rows, cols, vals = [], [], []
    i = -1
    for i, line in enumerate(f):
      for item in line.split():
        j, v = item.split(":")
        rows.append(i)
        cols.append(int(j))
        vals.append(float(v))
  if i + 1 != n:
    raise UserError(f"{path}: the header announces {n} rows, the file has {i + 1}")
  if cols and max(cols) >= m:
    raise UserError(f"{path}: label {max(cols)} is out of range for {m} labels")
  return sp.csr_matrix((np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                       shape=(n, m))


def read_raw_text(path: str) -> List[str]:
  if not os.path.exists(path):
    raise UserError(f"text file {path} does not exist")
  with open(path, encoding="latin-1") as f:
    return [line.strip() for line in f]


def load_lf_dataset(data_dir: str) -> Dict[str, object]:
  """An LF-* dataset folder: label matrices, titles of train/test points and labels, and the test
  filter (an empty (0, 2) array when the folder has none)."""
  out: Dict[str, object] = {f"{s}_labels": read_label_matrix(os.path.join(data_dir, f"{s}_X_Y.txt"))
                            for s in ("trn", "tst")}
  for s in ("trn", "tst", "lbl"):
    out[f"{s}_text"] = read_raw_text(os.path.join(data_dir, f"{s}.raw.txt"))
  for s in ("trn", "tst"):
    if len(out[f"{s}_text"]) != out[f"{s}_labels"].shape[0]:
      raise UserError(f"{data_dir}: {len(out[f'{s}_text'])} {s} titles for {out[f'{s}_labels'].shape[0]} "
                      f"rows of {s}_X_Y.txt")
  if len(out["lbl_text"]) != out["trn_labels"].shape[1]:
    raise UserError(f"{data_dir}: {len(out['lbl_text'])} label titles for {out['trn_labels'].shape[1]} labels")
  filter_path = os.path.join(data_dir, "filter_labels_test.txt")
  out["filter"] = (np.loadtxt(filter_path, dtype=np.int64, ndmin=2) if os.path.exists(filter_path)
                   else np.zeros((0, 2), np.int64))
  return out


def synthetic_xc(seed: int = 0, num_groups: int = 100, labels_per_group: int = 20, num_train: int = 8192,
                 num_test: int = 2000, dim: int = 32, nuisance_dim: int = 32, sibling_scale: float = 0.5,
                 noise: float = 0.3, nuisance: float = 1.0, zipf: float = 0.7,
                 mean_siblings: float = 1.0) -> Dict[str, object]:
  """The synthetic XC set: x_train, y_train (CSR), x_test, y_test, label_x (features of the labels),
  label_group. Scales are norms: a group centroid has norm ~1, a label's offset ~sibling_scale."""
  rng = np.random.default_rng(seed)
  num_labels = num_groups * labels_per_group
  group = np.repeat(np.arange(num_groups), labels_per_group)
  gauss = lambda n, d, scale: scale * rng.standard_normal((n, d)) / np.sqrt(d)
  centroids = gauss(num_groups, dim, 1.0)[group] + gauss(num_labels, dim, sibling_scale)
  popularity = (1.0 + rng.permutation(num_labels)) ** -zipf
  popularity /= popularity.sum()

  def points(n):
    primary = rng.choice(num_labels, n, p=popularity)
    extra = np.minimum(rng.poisson(mean_siblings, n), labels_per_group - 1)
    # Siblings without replacement, weighted by popularity, for all points at once: the `extra` largest
    # of log(popularity) + Gumbel noise among the primary's group (Gumbel-top-k sampling).
    members = group[primary][:, None] * labels_per_group + np.arange(labels_per_group)[None, :]
    keys = np.log(popularity[members]) + rng.gumbel(size=members.shape)
    keys[members == primary[:, None]] = -np.inf
    ranked = np.take_along_axis(members, np.argsort(-keys, axis=1), 1)
    take = np.concatenate([np.ones((n, 1), bool), np.arange(labels_per_group - 1)[None, :] < extra[:, None]], 1)
    labels = np.concatenate([primary[:, None], ranked[:, :-1]], 1)
    rows = np.repeat(np.arange(n), take.sum(1))
    y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, labels[take])), shape=(n, num_labels))
    signal = (y @ centroids) / take.sum(1, keepdims=True) + gauss(n, dim, noise)
    return np.concatenate([signal, gauss(n, nuisance_dim, nuisance)], 1).astype(np.float32), y

  x_train, y_train = points(num_train)
  x_test, y_test = points(num_test)
  label_x = np.concatenate([centroids + gauss(num_labels, dim, noise),
                            gauss(num_labels, nuisance_dim, nuisance)], 1).astype(np.float32)
  return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, label_x=label_x,
              label_group=group)
