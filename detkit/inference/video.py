"""Predicting on video files: an annotated copy of each video and one JSON line per frame (``tools/predict.py
--videos``).

Frames are decoded with OpenCV (``cv2.VideoCapture``), predicted in batches as images are (``Detector.predict``),
drawn (``annotate``) and written at the input's frame rate and size ("mp4v" codec) to ``OUT/<stem>.mp4``;
``OUT/<stem>.jsonl`` gets one line per decoded frame (``frame_record``). Both are written under temporary names
and renamed when the video is done, so a failure leaves no file that looks complete. A video that cannot be
opened, or gives no frame, is named and skipped; one that gives fewer frames than the file declares (OpenCV
skips a frame it cannot decode and stops where the data ends) keeps the frames decoded and is named too.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TextIO

import cv2
import numpy as np
from tqdm import tqdm

from detkit.atomic_io import atomic_destination
from detkit.drawing.boxes import annotate
from detkit.inference.images import expand_paths
from detkit.inference.overrides import PredictOptions
from detkit.inference.predictor import Detector, Prediction
from detkit.inference.run import output_names, with_unreadable

VIDEO_EXTENSIONS = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm", ".wmv")
FOURCC = "mp4v"  # MPEG-4 part 2: every OpenCV wheel's FFmpeg writes it, into the .mp4 container
UNKNOWN_FPS = 25.0  # written when the container states no frame rate (OpenCV then reports 0)


class BadVideoError(ValueError):
    """A video file that cannot be opened or decoded; the message names the file."""


class PartlyDecodedError(BadVideoError):
    """A video of which fewer frames could be decoded than the file declares: the decoded ones were written
    (``frames`` of them)."""

    def __init__(self, message: str, frames: int):
        super().__init__(message)
        self.frames = frames


@dataclass(frozen=True)
class VideoInfo:
    """What the container states: frames per second and the frame count (0: unknown)."""

    fps: float
    declared_frames: int


@dataclass
class VideoRun:
    """What ``predict_videos`` wrote: (annotated video, JSON lines) paths per readable video, the unreadable
    inputs, and the frames predicted in how many seconds (decoding, prediction, drawing and encoding)."""

    written: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one message per video that could not be (fully) read
    frames: int = 0
    seconds: float = 0.0


def expand_video_paths(items: Sequence[str]) -> list[str]:
    """Files, folders and glob patterns -> video paths (``expand_paths`` with ``VIDEO_EXTENSIONS``)."""
    return expand_paths(items, VIDEO_EXTENSIONS, "video")


def open_video(path: str) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An opened capture of ``path`` and its ``VideoInfo``; BadVideoError naming the file when it is missing or
    OpenCV cannot open it."""
    if not os.path.isfile(path):
        raise BadVideoError(f"video file not found: {path}")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise BadVideoError(f"cannot read video {path}: OpenCV cannot open it (not a video, or truncated)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(fps=fps if fps > 0 else UNKNOWN_FPS,
                     declared_frames=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))))
    return capture, info


def decoded_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The frames of ``capture`` as (H, W, 3) uint8 RGB, until the stream ends (OpenCV skips, without a word,
    a frame it cannot decode)."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive lists of ``size`` frames (the last may be shorter)."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def frame_record(index: int, seconds: float, prediction: Prediction) -> dict:
    """One JSON line: ``frame`` (0-based index among the decoded frames), ``time`` (index / fps, seconds),
    ``boxes`` (D lists [x1, y1, x2, y2] in the frame's pixels), ``scores`` (D), ``labels`` (D training labels
    0..K-1), ``names`` (D)."""
    return {"frame": index, "time": round(seconds, 6), "boxes": prediction.boxes.tolist(),
            "scores": prediction.scores.tolist(), "labels": prediction.labels.tolist(), "names": prediction.names}


def open_writer(path: str, fps: float, height: int, width: int) -> cv2.VideoWriter:
    """An OpenCV writer of (height, width) BGR frames at ``fps`` into ``path`` (codec ``FOURCC``, container from
    the extension); OSError naming the file when OpenCV cannot write it."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}: OpenCV has no {FOURCC!r} encoder or cannot create the file")
    return writer


def predict_frames(detector: Detector, capture: cv2.VideoCapture, video_path: str, lines: TextIO, fps: float, *,
                   options: PredictOptions, batch_size: int, bar: tqdm) -> int:
    """Predict, draw and write every decoded frame of ``capture``: the annotated frames to ``video_path`` at the
    first frame's size (OpenCV's sizes follow its auto-rotation), a ``frame_record`` each to ``lines``. Returns
    the number of frames."""
    writer, frames = None, 0
    try:
        for batch in batches(decoded_frames(capture), batch_size):
            writer = writer or open_writer(video_path, fps, *batch[0].shape[:2])
            for frame, prediction in zip(batch, detector.predict(batch, batch_size=batch_size, **asdict(options))):
                writer.write(cv2.cvtColor(annotate(frame, prediction), cv2.COLOR_RGB2BGR))
                lines.write(json.dumps(frame_record(frames, frames / fps, prediction)) + "\n")
                frames += 1
            bar.update(len(batch))
    finally:
        if writer is not None:
            writer.release()
    return frames


def predict_video(detector: Detector, path: str, video_out: str, lines_out: str, *,
                  options: PredictOptions = PredictOptions(), batch_size: int = 8, progress: bool = True) -> int:
    """Predict every frame of the video ``path``; write the annotated video to ``video_out`` (same fps and size)
    and a ``frame_record`` per frame to ``lines_out``, both under temporary names until the last frame. Returns
    the number of frames. BadVideoError naming the file when it cannot be opened or gives no frame (nothing is
    written); PartlyDecodedError when it gives fewer frames than it declares (those frames are written)."""
    capture, info = open_video(path)
    try:
        with (atomic_destination(video_out) as video_temp, atomic_destination(lines_out) as lines_temp,
              open(lines_temp, "w", encoding="utf-8") as lines,
              tqdm(total=info.declared_frames or None, unit="frame", desc=os.path.basename(path),
                   disable=not progress) as bar):
            frames = predict_frames(detector, capture, video_temp, lines, info.fps, options=options,
                                    batch_size=batch_size, bar=bar)
            if frames == 0:
                raise BadVideoError(f"cannot read video {path}: no frame could be decoded")
    finally:
        capture.release()
    if frames < info.declared_frames:
        raise PartlyDecodedError(f"video {path}: {frames} of the {info.declared_frames} frames the file declares "
                                 f"could be decoded (damaged or missing data); those {frames} were written", frames)
    return frames


def predict_videos(detector: Detector, paths: Sequence[str], out_dir: str, *,
                   options: PredictOptions = PredictOptions(), batch_size: int = 8,
                   progress: bool = True) -> VideoRun:
    """``predict_video`` for each of ``paths`` into ``out_dir/<stem>.mp4`` and ``out_dir/<stem>.jsonl`` (a stem
    met again gets ``_2``...); an unreadable video is reported and skipped, the others go on."""
    run = VideoRun()
    started = time.perf_counter()
    for path, name in zip(paths, output_names(paths, ".mp4")):
        outputs = os.path.join(out_dir, name), os.path.join(out_dir, os.path.splitext(name)[0] + ".jsonl")
        try:
            run.frames += predict_video(detector, path, *outputs, options=options, batch_size=batch_size,
                                        progress=progress)
            run.written.append(outputs)
        except PartlyDecodedError as error:
            run.frames += error.frames
            run.written.append(outputs)
            run.unreadable.append(str(error))
            tqdm.write(f"skipped frames: {error}")
        except BadVideoError as error:
            run.unreadable.append(str(error))
            tqdm.write(f"skipped: {error}")
    run.seconds = time.perf_counter() - started
    return run


def video_summary(run: VideoRun, out_dir: str) -> str:
    """The closing lines ``tools/predict.py`` prints for videos, with the frames per second end to end."""
    rate = run.frames / run.seconds if run.seconds > 0 else 0.0
    written = (f"{len(run.written)} annotated videos and {run.frames} frames' JSON lines written to {out_dir} "
               f"in {run.seconds:.1f} s ({rate:.1f} frames/s, decoding and encoding included)")
    return with_unreadable(written, run.unreadable, "video(s) could not be read, or not every frame of them")
