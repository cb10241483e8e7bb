"""One storage layer for run folders: a local folder, NFS, or an object store (``s3://bucket/prefix``).

Why pyarrow: Ray Train's own storage (``RunConfig(storage_path=...)``) goes through ``pyarrow.fs``, so
raymotion accepts the same URIs and finds the same credentials as the Ray run it lives beside, with no
second client library (boto3, fsspec) to configure.

Credentials and endpoint come from the standard AWS variables, read on *every node* (each Ray worker
resolves its own filesystem; a ``StoragePath`` pickles as its URI only): ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` or ``AWS_PROFILE``, ``AWS_REGION``, and for
S3-compatible stores (MinIO, Ceph, moto) ``AWS_ENDPOINT_URL`` (``AWS_ENDPOINT_URL_S3`` wins over it).
pyarrow 26 honours ``AWS_ENDPOINT_URL`` in ``FileSystem.from_uri`` (Arrow >= 15). Without an endpoint
variable, ``from_uri`` asks AWS for the bucket's region (one HeadBucket request, even with
``AWS_REGION`` set). Query options in URIs (``s3://b/p?region=...``) are refused: they would not
survive joining paths, and the environment already carries every setting.

Atomicity of ``write_bytes`` / ``write_text`` (readers see the old file or the new one, never a torn one):
  * local disk and NFS: the data goes to a temp file in the same folder, then ``os.replace`` renames it
    over the target (a rename within one folder is atomic on POSIX filesystems and NFS).
  * object stores: one upload through ``open_output_stream``; S3 makes an object visible only when its
    PUT (small files) or multipart upload (large ones) completes, so it appears whole or not at all.
Whole-folder copies (``copy_from_local``, ``download_to``) are atomic per file only.

Appends are not offered on purpose: object stores cannot append at all, and NFS appends from several
clients interleave or lose data. Rewrite the whole file (small logs), or give each writer its own file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

# "s3:/bucket/key": what pathlib.Path("s3://bucket/key") leaves of a URI (it collapses the '//').
_MANGLED_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/[^/]")

# What to check when a store cannot be reached, by URI scheme.
_REMOTE_HINTS = {
    "s3": ("check on this node that the bucket exists, the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
           "or AWS_PROFILE) and, for an S3-compatible store, AWS_ENDPOINT_URL"),
    "gs": "check on this node that the bucket exists and the credentials (GOOGLE_APPLICATION_CREDENTIALS)",
}
_GENERIC_HINT = "check on this node that the store is reachable and its credentials are set"

# Filesystems resolved in this process, keyed by URI root and the endpoint variables: creating an
# S3FileSystem costs a client set-up (and, without an endpoint, a region look-up), and tests or notebooks
# may set AWS_ENDPOINT_URL after a first use.
_FILESYSTEMS: dict[tuple[str, str | None, str | None], tuple[pafs.FileSystem, str]] = {}
_LOCAL_FS = pafs.LocalFileSystem()


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``"s3://bucket/a/b"`` -> (scheme ``"s3"``, root ``"s3://bucket"``, rest ``"/a/b"``)."""
    scheme, _, after = uri.partition("://")
    authority, slash, rest = after.partition("/")
    return scheme, f"{scheme}://{authority}", slash + rest


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The (cached) filesystem holding ``uri`` and the path of its root inside it (``"bucket"`` on S3)."""
    scheme, root, _ = _split_uri(uri)
    key = (root, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ENDPOINT_URL_S3"))
    if key not in _FILESYSTEMS:
        # allow_delayed_open: a small file is then sent as one PutObject at close instead of a
        # multipart upload (three requests); a missing bucket is reported at write time instead of open.
        query = "?allow_delayed_open=true" if scheme == "s3" else ""
        try:
            _FILESYSTEMS[key] = pafs.FileSystem.from_uri(root + query)
        except OSError as error:
            raise OSError(f"cannot open the store of {uri}: {error}; "
                          f"{_REMOTE_HINTS.get(scheme, _GENERIC_HINT)}") from error
        except ValueError as error:  # pyarrow.lib.ArrowInvalid: scheme not built into pyarrow
            raise ValueError(
                f"storage URI {uri!r}: pyarrow does not know the scheme '{scheme}://' ({error}). Use a local "
                f"or NFS path, s3://bucket/prefix or gs://bucket/prefix (also hdfs://, abfs:// where pyarrow "
                f"was built with them).") from error
    return _FILESYSTEMS[key]


def _check_part(part: str, base: str) -> None:
    """Refuse a join component that is not a plain relative path (``..``, ``.``, ``/abs``, ``a//b``, empty):
    joining is string concatenation, so such parts would leave un-normalised or escaping URIs."""
    if not isinstance(part, str):
        raise TypeError(f"{base} / {part!r}: path components must be str, got {type(part).__name__}")
    if part.startswith("/") or any(s in ("", ".", "..") for s in part.rstrip("/").split("/")):
        raise ValueError(f"{base} / {part!r}: a path component must be a non-empty relative path without "
                         f"'.', '..' or empty segments (join 'a/b', not '/a', '../a' or 'a//b')")


class StoragePath:
    """A file or folder on local disk, NFS or an object store (s3://, gs://), through pyarrow.fs.

    ``uri`` is ``"/abs/path"`` for local paths (made absolute: ``~`` expanded, symlinks resolved) and
    the URI as given (``"s3://bucket/key"``, no trailing ``/``) for object stores. Equality, hashing and
    pickling go by ``uri`` alone: the filesystem is resolved lazily in each process from that process's
    environment (a Ray worker on another node uses its own AWS_* variables).
    """

    __slots__ = ("_uri",)

    def __init__(self, uri: str | os.PathLike[str] | StoragePath) -> None:
        if isinstance(uri, StoragePath):
            self._uri: str = uri.uri
            return
        text = os.fspath(uri)
        if not isinstance(text, str):
            raise TypeError(f"StoragePath needs a str path or URI, got bytes {text!r}; decode it first")
        if text.startswith("file://"):
            text = text[len("file://"):]
        if "://" in text:
            scheme, root, _ = _split_uri(text)
            if not scheme or root == f"{scheme}://":
                raise ValueError(f"storage URI {text!r} has no scheme or no bucket/host: "
                                 f"write it as s3://bucket/prefix")
            if "?" in text:
                raise ValueError(f"storage URI {text!r} carries query options, which are not supported: "
                                 f"drop the '?...' part and set them in the environment of every node "
                                 f"(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...)")
            self._uri = text.rstrip("/")
        elif _MANGLED_URI.match(text):
            raise ValueError(f"storage path {text!r} looks like a URI whose '//' was collapsed by "
                             f"pathlib.Path; pass the URI as a str (e.g. 's3://bucket/key')")
        else:
            self._uri = str(Path(text).expanduser().resolve())

    @classmethod
    def _from_uri(cls, uri: str) -> StoragePath:
        """Rebuild from an already normalised ``uri`` (no resolving: the URI is kept byte for byte)."""
        path = cls.__new__(cls)
        path._uri = uri
        return path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Pickle by URI only: no filesystem object (with its credentials) travels to Ray workers.
        return StoragePath._from_uri, (self._uri,)

    # -- naming ------------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """``"/abs/path"`` (local) or ``"s3://bucket/key"`` (object store)."""
        return self._uri

    @property
    def is_local(self) -> bool:
        """True for local disk and NFS (plain paths), False for URIs (``s3://``, ``gs://``, ...)."""
        return "://" not in self._uri

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem holding this path, resolved once per process and URI root."""
        return _LOCAL_FS if self.is_local else _resolve(self._uri)[0]

    @property
    def path(self) -> str:
        """The path inside ``filesystem``: ``"/abs/path"`` locally, ``"bucket/key"`` on S3 and GCS."""
        if self.is_local:
            return self._uri
        root_path = _resolve(self._uri)[1]
        return root_path.rstrip("/") + _split_uri(self._uri)[2]

    @property
    def name(self) -> str:
        """The last component (``"b.txt"`` for ``s3://bucket/a/b.txt``; the bucket for a bucket root)."""
        if self.is_local:
            return Path(self._uri).name
        _, root, rest = _split_uri(self._uri)
        return rest.rsplit("/", 1)[-1] if rest else root.split("://", 1)[1]

    @property
    def parent(self) -> StoragePath:
        """The folder holding this path; a bucket root (or ``/``) is its own parent."""
        if self.is_local:
            return StoragePath._from_uri(str(Path(self._uri).parent))
        _, root, rest = _split_uri(self._uri)
        return StoragePath._from_uri(root + rest.rsplit("/", 1)[0])

    def __truediv__(self, part: str) -> StoragePath:
        """``path / "a/b"``: a relative child (no ``..``, no leading ``/``)."""
        _check_part(part, self._uri)
        return StoragePath._from_uri(self._uri.rstrip("/") + "/" + part.rstrip("/"))

    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"StoragePath({self._uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoragePath) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self._uri} is on an object store and has no local file system path; use "
                            f"StoragePath's read_bytes/write_bytes, or download_to(a local folder) first")
        return self._uri

    # -- queries -----------------------------------------------------------------------------------

    def _type(self) -> pafs.FileType:
        filesystem, path = self.filesystem, self.path
        with self._errors("look up"):
            return filesystem.get_file_info(path).type

    def exists(self) -> bool:
        """True if a file or folder is there (on object stores: an object, or keys under the prefix)."""
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        """True if a file (an object) is there."""
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        """True if a folder is there (on object stores: a folder marker or keys under the prefix)."""
        return self._type() == pafs.FileType.Directory

    def iterdir(self) -> list[StoragePath]:
        """The direct children, sorted by URI; ``[]`` when nothing is there."""
        filesystem, selector = self.filesystem, pafs.FileSelector(self.path, allow_not_found=True)
        with self._errors("list"):
            infos = filesystem.get_file_info(selector)
        return sorted((self / info.base_name for info in infos), key=lambda p: p._uri)

    # -- reading and writing -----------------------------------------------------------------------

    def read_bytes(self) -> bytes:
        """The whole file; FileNotFoundError naming the URI when it is missing."""
        filesystem, path = self.filesystem, self.path
        # open_input_file (random access), not open_input_stream: on S3 a whole read is then one HEAD and
        # one GET, where the stream reads in chunks of a few hundred KB (45 GETs for 12 MB).
        with self._errors("read"), filesystem.open_input_file(path) as file:
            return file.read()

    def read_text(self) -> str:
        """The whole file decoded as UTF-8."""
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes, *, fsync: bool = False) -> None:
        """Replace the file with ``data`` atomically (see the module docstring), creating parent folders.

        ``fsync=True`` also flushes a local or NFS file to disk before the rename (durable across a
        machine crash, slower). Object stores are durable once the upload returns, so it changes nothing there.
        """
        if not self.is_local:
            filesystem, path = self.filesystem, self.path
            with self._errors("write"), filesystem.open_output_stream(path) as stream:
                stream.write(data)
            return
        folder = os.path.dirname(self._uri)
        os.makedirs(folder, exist_ok=True)
        # The temp file sits in the target's folder so os.replace is a rename within one filesystem.
        # os.open with 0o666 (not tempfile, which uses 0o600) so the file gets the usual umask permissions.
        temp = os.path.join(folder, f".{os.path.basename(self._uri)}.{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                if fsync:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, self._uri)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def write_text(self, text: str, *, fsync: bool = False) -> None:
        """``write_bytes(text.encode("utf-8"))``: atomic, parents created."""
        self.write_bytes(text.encode("utf-8"), fsync=fsync)

    # -- folders -----------------------------------------------------------------------------------

    def mkdir(self) -> None:
        """Create this folder and its parents; no error if it exists. On object stores pyarrow writes
        empty ``prefix/`` marker objects, so ``is_dir()`` is true afterwards on every backend."""
        filesystem, path = self.filesystem, self.path
        with self._errors("create folder"):
            filesystem.create_dir(path, recursive=True)

    def delete(self) -> None:
        """Delete this file; nothing happens when it is missing. On S3 pyarrow then writes a ``parent/``
        marker object so the parent folder keeps existing."""
        filesystem, path = self.filesystem, self.path
        with contextlib.suppress(FileNotFoundError), self._errors("delete"):
            filesystem.delete_file(path)

    def delete_dir(self) -> None:
        """Delete this folder and everything under it; nothing happens when it is missing."""
        filesystem, path = self.filesystem, self.path
        with contextlib.suppress(FileNotFoundError), self._errors("delete folder"):
            filesystem.delete_dir(path)

    def copy_from_local(self, local: str | os.PathLike[str]) -> None:
        """Copy a local folder (recursively) or file to this path, overwriting files of the same name."""
        source = str(Path(local).expanduser().resolve())
        if not os.path.exists(source):
            raise FileNotFoundError(errno.ENOENT, f"no local file or folder to copy to {self._uri}", source)
        filesystem, path = self.filesystem, self.path
        if self.is_local:  # pyarrow's copy_files creates only the sub-folders it lists, not the target
            os.makedirs(self._uri if os.path.isdir(source) else os.path.dirname(self._uri), exist_ok=True)
        with self._errors("copy to", missing_is_self=False):
            pafs.copy_files(source, path, source_filesystem=_LOCAL_FS, destination_filesystem=filesystem)

    def download_to(self, local: str | os.PathLike[str]) -> None:
        """Copy this folder (recursively) or file to the local path ``local``."""
        kind = self._type()
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self._uri)
        destination = str(Path(local).expanduser().resolve())
        # pyarrow's copy_files creates only the sub-folders it lists, not the target folder itself.
        os.makedirs(destination if kind == pafs.FileType.Directory else os.path.dirname(destination), exist_ok=True)
        filesystem, path = self.filesystem, self.path
        with self._errors("download", missing_is_self=False):
            pafs.copy_files(path, destination, source_filesystem=filesystem, destination_filesystem=_LOCAL_FS)

    @contextlib.contextmanager
    def _errors(self, action: str, *, missing_is_self: bool = True) -> Iterator[None]:
        """Re-raise pyarrow's errors naming this URI (its own messages name only the bucket-relative key).

        ``missing_is_self=False`` where a FileNotFoundError may be about another path (copies), which
        then keeps pyarrow's message.
        """
        try:
            yield
        except FileNotFoundError as error:
            if not missing_is_self:
                raise
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self._uri) from error
        except OSError as error:
            # Only plain OSError (pyarrow's network, credential and bucket errors) gets the hint;
            # subclasses such as PermissionError or IsADirectoryError keep their type.
            if self.is_local or type(error) is not OSError:
                raise
            scheme = self._uri.partition("://")[0]
            raise OSError(f"cannot {action} {self._uri}: {error}; "
                          f"{_REMOTE_HINTS.get(scheme, _GENERIC_HINT)}") from error


def join(base: str | os.PathLike[str] | StoragePath, *parts: str) -> str:
    """``join("s3://b/runs", "r1", "log.jsonl") == "s3://b/runs/r1/log.jsonl"``; local bases become absolute."""
    path = StoragePath(base)
    for part in parts:
        path = path / part
    return path.uri
