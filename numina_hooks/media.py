"""Videos in and out: GIF (Pillow) and MP4 (the ffmpeg binary that ``imageio-ffmpeg`` ships).

Frames are uint8 ``[F, H, W, 3]`` (or float in [0, 1] where a writer accepts them).
``check_video_writer(path)`` proves a path can be written *before* a long generation
starts (it writes a two-frame probe next to it and deletes it); ``write_video`` writes
frames ``[F, H, W, 3]``. Small frames (the toy model's 24 x 24) are scaled up by an integer
factor with nearest-neighbour sampling, so a person can see the objects and every pixel
stays a block of identical pixels (:func:`upscale_factor` tells the factor back).

``read_video`` reads a video file or a folder of frame images back; ``check_frames``
checks frames are uint8 ``[F, H, W, 3]``; ``pipeline_frames`` takes them out of a
diffusers output made with ``output_type="np"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["WRITABLE_SUFFIXES", "VIDEO_SUFFIXES", "FRAME_SUFFIXES", "VideoWriterError", "check_video_writer",
           "write_video", "upscale_factor", "to_uint8", "check_frames", "pipeline_frames", "read_video"]

WRITABLE_SUFFIXES = (".gif", ".mp4")
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
"""Suffixes :func:`read_video` reads as video files."""
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""Suffixes of frame images in a folder that :func:`read_video` reads as one video."""
MIN_SIDE = 192
"""Frames whose shorter side is below this are scaled up (nearest neighbour) when written."""
FPS = 16


# ---------------------------------------------------------------------------- frames out
class VideoWriterError(RuntimeError):
    """The video cannot be written here (unknown suffix, missing writer, unwritable folder)."""


def upscale_factor(height: int, width: int, min_side: int = MIN_SIDE) -> int:
    """Integer factor that brings the shorter side to at least ``min_side`` (1 for big frames)."""
    side = max(1, min(int(height), int(width)))
    return max(1, -(-min_side // side))


def to_uint8(frames) -> np.ndarray:
    """Float frames in [0, 1] (or uint8) ``[F, H, W, 3]`` -> uint8 ``[F, H, W, 3]``."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return arr


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise VideoWriterError(f"{path}: cannot write {suffix or 'a file without suffix'!r} videos; "
                               f"use one of {', '.join(WRITABLE_SUFFIXES)}")
    return suffix


def check_video_writer(path) -> None:
    """Raise :class:`VideoWriterError` unless a video can be written at ``path``.

    Checks the suffix, that the folder can be created and written, and for MP4 that the
    ffmpeg writer is installed and works (a two-frame probe is written and removed).
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VideoWriterError(f"cannot create the folder {path.parent} ({err.strerror or err})") from None
    if path.is_dir():
        raise VideoWriterError(f"{path} is a folder; give a file name such as {path / ('video' + suffix)}")
    if not os.access(path.parent, os.W_OK):
        raise VideoWriterError(f"cannot write to {path.parent} (permission denied)")
    probe = path.with_name(f".{path.stem}.probe{suffix}")
    try:
        write_video(np.zeros((2, 16, 16, 3), dtype=np.uint8), probe, min_side=16)
    except VideoWriterError:
        raise
    except Exception as err:
        raise VideoWriterError(f"cannot write {suffix} videos here ({type(err).__name__}: {err})") from None
    finally:
        probe.unlink(missing_ok=True)


def write_video(frames, path, fps: int = FPS, min_side: int = MIN_SIDE) -> Path:
    """Write ``frames`` (float ``[F, H, W, 3]`` in [0, 1], or uint8) to ``path`` (.gif or
    .mp4); frames smaller than ``min_side`` are scaled up by :func:`upscale_factor`.
    Returns the path."""
    path = Path(path)
    suffix = _suffix(path)
    arr = to_uint8(frames)
    k = upscale_factor(arr.shape[1], arr.shape[2], min_side)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        try:
            from PIL import Image
        except ImportError:
            raise VideoWriterError("writing GIF needs Pillow: pip install 'numina-hooks[media]'") from None
        # GIF holds 256 colours a frame: choose them on the original frame, then scale up the
        # palette image, so every k x k block decodes to what the original frame would
        images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in arr]
        if k > 1:
            images = [im.resize((im.width * k, im.height * k), Image.NEAREST) for im in images]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    if k > 1:
        arr = arr.repeat(k, axis=1).repeat(k, axis=2)
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoWriterError("writing MP4 needs imageio-ffmpeg: pip install 'numina-hooks[media]' "
                               "(or pip install imageio-ffmpeg), or write a .gif") from None
    h, w = arr.shape[1:3]
    if h % 2 or w % 2:  # H.264 in yuv420p needs even sides: repeat the last row / column
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = arr.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=8, ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in arr:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()
    return path


# ---------------------------------------------------------------------------- frames in
def check_frames(frames) -> np.ndarray:
    """``frames`` as uint8 [F, H, W, 3]; a clear error for anything else."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise ValueError(
            f"expected video frames as uint8 [F, H, W, 3] with F >= 1, got {arr.dtype} {arr.shape}; "
            "convert float frames in [0, 1] with (frames * 255).round().astype(np.uint8)"
        )
    return arr


def pipeline_frames(out) -> np.ndarray:
    """Frames of a pipeline output made with ``output_type="np"`` (``out.frames`` or
    ``out[0]``: [B, F, H, W, 3], [F, H, W, 3] or a list of those) -> uint8 [F, H, W, 3] of
    the first video; floats in [0, 1] are scaled to 0..255 and rounded."""
    frames = out.frames if hasattr(out, "frames") else out[0]
    arr = np.asarray(frames[0] if not isinstance(frames, np.ndarray) or frames.ndim == 5 else frames)
    return to_uint8(arr[0] if arr.ndim == 5 else arr)


def read_video(path) -> np.ndarray:
    """A video file (GIF via Pillow; MP4 and others via imageio) or a folder of frame
    images (sorted by name) -> uint8 [F, H, W, 3]."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no frame images ({', '.join(FRAME_SUFFIXES)})")
        from PIL import Image

        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        return check_frames(np.stack(frames))
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        return check_frames(np.stack(frames))
    try:
        import imageio.v3 as iio
    except ImportError as err:
        raise ImportError(f"reading {path.suffix} videos needs imageio with a video backend: "
                          "pip install imageio imageio-ffmpeg (or av)") from err
    try:
        arr = np.asarray(iio.imread(path, index=None))
    except Exception as err:
        raise RuntimeError(f"could not read {path} ({err}); for MP4 install a backend: "
                           "pip install imageio-ffmpeg (or av)") from err
    if arr.ndim == 4 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return check_frames(arr)
