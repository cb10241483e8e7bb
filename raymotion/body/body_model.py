"""The body model: a stateless wrapper of ``smplx.SMPLLayer`` with typed outputs.

Legend: B batch, V mesh vertices (read from the model file; 6,890 for SMPL, ~13.7k for the embedded
body, never assumed), F faces, J = 24 SMPL joints, E extra surface joints, K shape coefficients.
Units are metres; the frame is the body model's (SMPL: y up, the body faces +z, subject's left is +x)
unless a translation moves it into a camera frame.

All pose and shape parameters come in through ``forward`` (smplx's ``SMPLLayer``), so one module serves
any batch. Two kinds of model files load:
- users' SMPL files in the SPIN/MMHuman3D layout (``<smpl_dir>/SMPL_NEUTRAL.pkl`` or ``.npz``), with
  SPIN's ``J_regressor_h36m.npy`` for the evaluation joints;
- the embedded default, NAVER's free Anny body baked into the same layout (``raymotion/assets``), which
  carries its own evaluation regressor and extra-joint vertex ids.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import smplx
import torch
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS
from torch import Tensor, nn

from raymotion.config import BodyConfig
from raymotion.body.joints import (
    EXTRA_JOINT_NAMES,
    H36M_TO_EVAL14,
    NUM_BODY_JOINTS,
    NUM_H36M_JOINTS,
    NUM_SMPL_JOINTS,
)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_BODY_FILES = {"anny": "anny_smpl.npz", "anny_lowres": "anny_smpl_lowres.npz"}

# The arrays smplx reads from an SMPL file (smplx/body_models.py, SMPL.__init__).
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
# smplx's default extra-joint ids index the SMPL/SMPL-H topology (ids up to 6787): on another mesh they
# crash or silently pick the wrong vertices, so they are used only for a 6,890-vertex mesh.
SMPL_NUM_VERTS = 6890
SMPL_REGISTER_URL = "https://smpl.is.tue.mpg.de"
SMPLIFY_REGISTER_URL = "https://smplify.is.tue.mpg.de"


@dataclass(frozen=True, slots=True)
class BodyOutput:
    """What the body model returns for a batch.

    verts_BV3: (B, V, 3) mesh vertices, metres.
    joints_BJ3: (B, 24, 3) SMPL kinematic joints, metres.
    extra_joints_BE3: (B, 21, 3) surface joints (nose, eyes, ears, feet, finger tips), metres.
    eval_joints_B143: (B, 14, 3) the LSP-style evaluation joints (raymotion.body.joints.EVAL_JOINT_NAMES).
    """

    verts_BV3: Tensor
    joints_BJ3: Tensor
    extra_joints_BE3: Tensor
    eval_joints_B143: Tensor


class BodyModel(nn.Module):
    """SMPL-layout body model: (rotations, betas[, translation]) -> ``BodyOutput``.

    Build it with ``load_body_model(config.body)``, ``BodyModel.from_file(path)`` or
    ``BodyModel.from_arrays(arrays)`` (tests use in-memory arrays, never licensed files).
    """

    faces_F3: Tensor
    h36m_regressor_17V: Tensor

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        *,
        h36m_regressor_17V: np.ndarray,
        num_betas: int = 10,
        source: str = "<in-memory>",
    ) -> None:
        super().__init__()
        _check_arrays(arrays, source=source)
        num_verts = arrays["v_template"].shape[0]
        self.source = source
        self.num_verts = num_verts
        available_betas = arrays["shapedirs"].shape[-1]
        if num_betas > available_betas:
            raise ValueError(
                f"body.num_betas={num_betas} but {source} has only {available_betas} shape components; "
                f"set body.num_betas to at most {available_betas}"
            )
        self.num_betas = num_betas
        # smplx print()s a warning for any model with fewer than 300 shape components (every SMPL file
        # has 10): silence that print, not warnings.
        with contextlib.redirect_stdout(io.StringIO()):
            self.layer = smplx.SMPLLayer(
                model_path=str(source),
                data_struct=smplx.utils.Struct(**arrays),
                num_betas=num_betas,
                vertex_ids=_extra_joint_vertex_ids(arrays, source=source),
            )
        self.register_buffer("faces_F3", torch.as_tensor(arrays["f"].astype(np.int64)), persistent=False)
        if h36m_regressor_17V.shape != (NUM_H36M_JOINTS, num_verts):
            raise ValueError(
                f"the Human3.6M joint regressor for {source} has shape {h36m_regressor_17V.shape}, "
                f"expected ({NUM_H36M_JOINTS}, {num_verts}) to match the mesh's {num_verts} vertices"
            )
        _check_finite(h36m_regressor_17V, what=f"the Human3.6M joint regressor for {source}")
        self.register_buffer(
            "h36m_regressor_17V", torch.as_tensor(h36m_regressor_17V, dtype=torch.float32), persistent=False
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], *, num_betas: int = 10, source: str = "<in-memory>") -> BodyModel:
        """A model from SMPL-layout arrays that carry their own ``J_regressor_h36m`` (17, V)."""
        arrays = _to_numpy(arrays)
        if "J_regressor_h36m" not in arrays:
            raise ValueError(f"{source} has no 'J_regressor_h36m' array (17, V) for the evaluation joints")
        return cls(arrays, h36m_regressor_17V=arrays["J_regressor_h36m"], num_betas=num_betas, source=source)

    @classmethod
    def from_file(
        cls, path: str | Path, *, h36m_regressor_path: str | Path | None = None, num_betas: int = 10
    ) -> BodyModel:
        """Load an SMPL-layout ``.pkl`` or ``.npz``.

        The evaluation regressor comes from the file's ``J_regressor_h36m`` array if it has one (the
        embedded body does), else from ``h36m_regressor_path`` (SPIN's ``J_regressor_h36m.npy``).
        """
        path = Path(path)
        arrays = read_smpl_file(path)
        if "J_regressor_h36m" in arrays:
            regressor = arrays["J_regressor_h36m"]
        elif h36m_regressor_path is not None:
            regressor = _read_h36m_regressor(Path(h36m_regressor_path))
        else:
            raise ValueError(f"{path} has no 'J_regressor_h36m' array: pass the path of J_regressor_h36m.npy")
        return cls(arrays, h36m_regressor_17V=regressor, num_betas=num_betas, source=str(path))

    def forward(
        self,
        *,
        rotmats_BJ33: Tensor,
        betas_BK: Tensor,
        transl_B3: Tensor | None = None,
    ) -> BodyOutput:
        """Pose and shape the body.

        Args:
            rotmats_BJ33: (B, 24, 3, 3) joint rotations, root (global orientation) first, SMPL order.
            betas_BK: (B, K) shape coefficients, K = ``num_betas``.
            transl_B3: (B, 3) optional translation in metres, added to everything.
        """
        batch = rotmats_BJ33.shape[0]
        if rotmats_BJ33.shape[1:] != (NUM_SMPL_JOINTS, 3, 3):
            raise ValueError(f"rotmats_BJ33 must have shape (B, {NUM_SMPL_JOINTS}, 3, 3), got {tuple(rotmats_BJ33.shape)}")
        if betas_BK.shape != (batch, self.num_betas):
            raise ValueError(f"betas_BK must have shape ({batch}, {self.num_betas}), got {tuple(betas_BK.shape)}")
        out = self.layer(
            global_orient=rotmats_BJ33[:, :1],
            body_pose=rotmats_BJ33[:, 1:].reshape(batch, NUM_BODY_JOINTS, 3, 3),
            betas=betas_BK,
            transl=transl_B3,
        )
        verts_BV3 = out.vertices
        h36m_B173 = torch.einsum("jv,bvc->bjc", self.h36m_regressor_17V, verts_BV3)
        return BodyOutput(
            verts_BV3=verts_BV3,
            joints_BJ3=out.joints[:, :NUM_SMPL_JOINTS],
            extra_joints_BE3=out.joints[:, NUM_SMPL_JOINTS:],
            eval_joints_B143=h36m_B173[:, list(H36M_TO_EVAL14)],
        )


# What an official SMPL .pkl may reference (written by Python 2: numpy arrays, scipy.sparse matrices, chumpy
# arrays rebuilt through copy_reg). Anything else a pickle names is refused before it can run: a plain
# pickle.load would call whatever a planted __reduce__ asks for. The numpy and builtin part, which tracker
# pickles need too, is shared with raymotion.data.boxes.
NUMPY_PICKLE_GLOBALS = {
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("__builtin__", "object"), ("builtins", "object"), ("__builtin__", "set"), ("builtins", "set"),
    ("__builtin__", "frozenset"), ("builtins", "frozenset"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}
_SPARSE_CLASSES = {f"{kind}_{what}" for kind in ("csc", "csr", "coo", "lil", "dok", "bsr", "dia")
                   for what in ("matrix", "array")}


class _SMPLUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, scipy.sparse matrices and chumpy arrays (subclasses of ``chumpy.Ch``) only."""

    def __init__(self, handle: Any, *, path: Path) -> None:
        super().__init__(handle, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_PICKLE_GLOBALS or (module.startswith("scipy.sparse") and name in _SPARSE_CLASSES):
            return super().find_class(module, name)
        if module == "chumpy" or module.startswith("chumpy."):
            found = super().find_class(module, name)  # imports chumpy (needed to read official files anyway)
            from chumpy import Ch

            if isinstance(found, type) and issubclass(found, Ch):
                return found
        if (module, name) in _compat_pickle.NAME_MAPPING:  # name it as Python 3 does (__builtin__ -> builtins)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        raise pickle.UnpicklingError(
            f"{self.path} asks to load {module}.{name}, which is not part of an SMPL model file (numpy, "
            "scipy.sparse and chumpy arrays only); it was refused and nothing from the file ran. Download the "
            f"file again from {SMPL_REGISTER_URL}, or convert a trusted copy once with `raymotion smpl-to-npz`")


def read_smpl_file(path: Path) -> dict[str, np.ndarray]:
    """Read an SMPL-layout ``.pkl`` (official files hold chumpy and scipy.sparse arrays) or ``.npz``.

    ``.npz`` files load with ``allow_pickle=False``. ``.pkl`` files go through a restricted unpickler that
    accepts numpy arrays, scipy.sparse matrices and chumpy arrays and refuses anything else by name before
    it runs (``_SMPLUnpickler``).
    """
    if not path.is_file():
        raise FileNotFoundError(f"body model file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            raw: dict[str, Any] = {key: data[key] for key in data.files}
    elif path.suffix == ".pkl":
        try:
            with path.open("rb") as handle:
                raw = _SMPLUnpickler(handle, path=path).load()
        except ModuleNotFoundError as err:
            if err.name == "chumpy":
                raise ModuleNotFoundError(
                    f"{path} holds chumpy arrays (official SMPL .pkl files do): install chumpy with "
                    "`pip install chumpy-fixed==0.71` (chumpy 0.70 does not build on Python 3.11)",
                    name="chumpy",
                ) from err
            raise
        except pickle.UnpicklingError as err:
            if str(err).startswith(str(path)):  # refused by _SMPLUnpickler: its message says it all
                raise ValueError(str(err)) from None
            raise ValueError(f"{path} is not a readable SMPL pickle ({err}); download it again") from err
        except (EOFError, ValueError) as err:
            raise ValueError(f"{path} is not a readable SMPL pickle ({err}); download it again") from err
        if not isinstance(raw, dict):
            raise ValueError(f"{path} unpickles to {type(raw).__name__}, expected a dict of SMPL arrays")
    else:
        raise ValueError(f"body model file {path} must end in .pkl or .npz, got '{path.suffix}'")
    return _to_numpy(raw)


def smpl_pkl_to_npz(source: Path, target: Path) -> dict[str, np.ndarray]:
    """Convert an SMPL ``.pkl`` once into an ``.npz`` that later loads without any unpickling
    (``allow_pickle=False``); written atomically. Returns the arrays written."""
    if target.suffix != ".npz":
        raise ValueError(f"--out {target} must end in .npz")
    # Only plain arrays: anything else (an object array) would need pickling to load again.
    arrays = {key: value for key, value in read_smpl_file(source).items()
              if isinstance(value, np.ndarray) and value.dtype != object}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(target)
    return arrays


def _to_numpy(raw: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if hasattr(value, "toarray"):  # scipy.sparse (the official J_regressor)
            value = value.toarray()
        elif isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        try:
            arrays[key] = np.asarray(value)  # chumpy arrays convert through __array__
        except Exception:  # noqa: BLE001 - metadata that is not an array (e.g. a string) is kept as is
            arrays[key] = value
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "J_regressor_h36m"):
        if key in arrays:
            arrays[key] = arrays[key].astype(np.float32)
    return arrays


def _check_arrays(arrays: dict[str, np.ndarray], *, source: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(
            f"{source} is not an SMPL-layout model file: missing {', '.join(missing)} "
            f"(an SMPL file holds {', '.join(REQUIRED_KEYS)})"
        )
    num_verts = arrays["v_template"].shape[0]
    expected = {
        "v_template": (num_verts, 3),
        "J_regressor": (NUM_SMPL_JOINTS, num_verts),
        "weights": (num_verts, NUM_SMPL_JOINTS),
        "kintree_table": (2, NUM_SMPL_JOINTS),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ValueError(f"{source}: '{key}' has shape {arrays[key].shape}, expected {shape}")
    if arrays["shapedirs"].shape[:2] != (num_verts, 3):
        raise ValueError(f"{source}: 'shapedirs' has shape {arrays['shapedirs'].shape}, expected ({num_verts}, 3, K)")
    if arrays["posedirs"].shape[-1] != NUM_BODY_JOINTS * 9:
        raise ValueError(
            f"{source}: 'posedirs' has {arrays['posedirs'].shape[-1]} pose-corrective columns, "
            f"expected {NUM_BODY_JOINTS * 9} (zeros are fine)"
        )
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        _check_finite(arrays[key], what=f"{source}: '{key}'")
    faces = arrays["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= num_verts:
        raise ValueError(f"{source}: 'f' must be (F, 3) vertex indices in [0, {num_verts}), got shape {faces.shape}")


def _check_finite(array: np.ndarray, *, what: str) -> None:
    """Raise naming ``what`` and the first index where a body-model array is NaN or inf (it would turn every
    mesh, joint and metric it touches into NaN, or crash an SVD downstream)."""
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} holds {int(bad.sum())} non-finite value(s) (first: {array[index]} at index "
                         f"{list(index)}); the file is damaged: get a fresh copy")


def _extra_joint_vertex_ids(arrays: dict[str, np.ndarray], *, source: str) -> dict[str, int]:
    """Vertex ids of the 21 extra surface joints, always matching this mesh."""
    num_verts = arrays["v_template"].shape[0]
    if all(f"vertex_ids_{name}" in arrays for name in EXTRA_JOINT_NAMES):
        ids = {name: int(arrays[f"vertex_ids_{name}"]) for name in EXTRA_JOINT_NAMES}
    elif num_verts == SMPL_NUM_VERTS:
        ids = {name: SMPLX_VERTEX_IDS["smplh"][name] for name in EXTRA_JOINT_NAMES}
    else:
        raise ValueError(
            f"{source} has {num_verts} vertices and no 'vertex_ids_<name>' arrays for the extra joints; "
            f"smplx's default ids are for the {SMPL_NUM_VERTS}-vertex SMPL mesh. Add one vertex id per "
            f"extra joint ({', '.join(EXTRA_JOINT_NAMES)}) as 'vertex_ids_<name>'"
        )
    bad = {name: vid for name, vid in ids.items() if not 0 <= vid < num_verts}
    if bad:
        raise ValueError(f"{source}: extra-joint vertex ids {bad} lie outside [0, {num_verts})")
    return ids


def _read_h36m_regressor(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluation joint regressor not found: {path}. With your own SMPL files, raymotion needs SPIN's "
            "J_regressor_h36m.npy (17 x 6890; part of SPIN's data download, see its fetch_data.sh): put it at "
            f"{path} or set body.h36m_regressor=<path>"
        )
    regressor = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    _check_finite(regressor, what=f"the Human3.6M joint regressor {path}")
    return regressor


def embedded_body_path(model: str) -> Path:
    """Path of an embedded body file ('anny' or 'anny_lowres')."""
    if model not in EMBEDDED_BODY_FILES:
        raise ValueError(f"unknown embedded body '{model}'; choose one of {sorted(EMBEDDED_BODY_FILES)}")
    return ASSETS_DIR / EMBEDDED_BODY_FILES[model]


def smpl_file_path(smpl_dir: str | Path, gender: str) -> Path:
    """Find ``SMPL_<GENDER>.pkl`` (or ``.npz``) in the SPIN/MMHuman3D layout, with a helpful error."""
    smpl_dir = Path(smpl_dir)
    stem = f"SMPL_{gender.upper()}"
    for suffix in (".npz", ".pkl"):  # a converted .npz (smpl_pkl_to_npz) wins: it loads without unpickling
        candidate = smpl_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    where = SMPLIFY_REGISTER_URL if gender == "neutral" else SMPL_REGISTER_URL
    raise FileNotFoundError(
        f"SMPL model file not found: {smpl_dir / (stem + '.pkl')} (nor .npz). SMPL is licence-restricted: "
        f"register and download it at {where} (the neutral model ships with SMPLify; male/female with SMPL "
        f"at {SMPL_REGISTER_URL}), rename it to {stem}.pkl and put it in {smpl_dir}/, or set "
        "body.smpl_dir=<folder>. Official .pkl files need chumpy (`pip install chumpy-fixed==0.71`). "
        "Or use the free embedded body: body.model=anny."
    )


def h36m_regressor_path(body_cfg: BodyConfig) -> Path:
    """``body.h36m_regressor`` resolved: a relative path against ``body.smpl_dir``, an absolute one as given."""
    path = Path(body_cfg.h36m_regressor).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(Path(body_cfg.smpl_dir) / path))


def load_body_model(body_cfg: BodyConfig) -> BodyModel:
    """Build the body model that ``config.body`` names."""
    if body_cfg.model == "smpl":
        return BodyModel.from_file(
            smpl_file_path(body_cfg.smpl_dir, body_cfg.gender),
            h36m_regressor_path=h36m_regressor_path(body_cfg),
            num_betas=body_cfg.num_betas,
        )
    path = embedded_body_path(body_cfg.model)
    if not path.is_file():
        raise FileNotFoundError(
            f"the embedded body file {path} is missing from this installation; reinstall raymotion or "
            "rebake it with `python tools/bake_default_body.py --out-dir raymotion/assets`"
        )
    return BodyModel.from_file(path, num_betas=body_cfg.num_betas)
