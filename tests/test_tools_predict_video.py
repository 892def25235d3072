"""tools/predict.py --videos: an annotated video (same frames, fps and size) and one JSON line per frame equal to
``predict()`` on the decoded frames; unreadable videos named and skipped; nothing that looks complete after a
failure."""
import json
import os

import cv2
import numpy as np
import pytest
from inference_helpers import save_perfect_checkpoint
from test_tools_predict import run_predict

import detkit
from detkit.inference.video import predict_videos

pytestmark = pytest.mark.usefixtures("one_thread")

FPS, WIDTH, HEIGHT = 5.0, 128, 96


@pytest.fixture(scope="module")
def perfect(tmp_path_factory):
    checkpoint, config, _ = save_perfect_checkpoint(tmp_path_factory.mktemp("perfect") / "run")
    return checkpoint, config


def moving_squares(count: int) -> list[np.ndarray]:
    """``count`` (HEIGHT, WIDTH, 3) uint8 RGB frames: a red square moving right, a blue one moving down."""
    frames = []
    for i in range(count):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        frame[10:34, 8 + 8 * i:32 + 8 * i, 0] = 255
        frame[20 + 6 * i:44 + 6 * i, 80:110, 2] = 255
        frames.append(frame)
    return frames


def write_video(path, frames: list[np.ndarray], fourcc: str = "FFV1") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def decode(path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """Every frame of ``path`` as RGB, the fps and the (width, height) the file states."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps, size


def test_a_video_gives_an_annotated_video_and_a_line_per_frame_equal_to_predict(perfect, tmp_path, capsys):
    checkpoint, config = perfect
    write_video(tmp_path / "clip.avi", moving_squares(7))  # FFV1: lossless, the decoded frames are the drawn ones
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    out = tmp_path / "out"
    code = run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--videos",
                       str(tmp_path / "clip.avi"), str(tmp_path / "broken.mp4"), str(tmp_path / "missing.avi"),
                       "--out", str(out), "--device", "cpu", "--batch-size", "3")
    captured = capsys.readouterr()
    assert code == 1  # two videos unreadable, the third written
    assert f"cannot read video {tmp_path / 'broken.mp4'}" in captured.out
    assert f"video file not found: {tmp_path / 'missing.avi'}" in captured.out
    assert "1 annotated videos and 7 frames' JSON lines" in captured.out and "frames/s" in captured.out
    assert "clip.avi: 100%" in captured.err  # the progress bar reached the end
    assert sorted(os.listdir(out)) == ["clip.jsonl", "clip.mp4"]

    decoded, _, _ = decode(tmp_path / "clip.avi")
    expected = detkit.load(checkpoint, config=config, device="cpu").predict(decoded, batch_size=3)
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert len(records) == len(decoded) == 7
    for index, (record, prediction) in enumerate(zip(records, expected)):
        assert record["frame"] == index and record["time"] == pytest.approx(index / FPS)
        assert record["names"] == prediction.names == ["red", "blue"] and record["labels"] == [0, 2]
        np.testing.assert_allclose(record["boxes"], prediction.boxes.numpy(), atol=1e-4)  # the frame's pixels
        np.testing.assert_allclose(record["scores"], prediction.scores.numpy())
        assert record["boxes"][0] == pytest.approx([8 + 8 * index, 10, 32 + 8 * index, 34], abs=0.5)

    annotated, fps, size = decode(out / "clip.mp4")
    assert len(annotated) == 7 and fps == FPS and size == (WIDTH, HEIGHT)
    assert not np.array_equal(annotated[0], decoded[0])  # boxes drawn


def test_an_undecodable_frame_is_skipped_and_its_video_named(perfect, tmp_path, capsys):
    checkpoint, config = perfect
    write_video(tmp_path / "clip.avi", moving_squares(8), fourcc="MJPG")
    data = (tmp_path / "clip.avi").read_bytes()
    movie = data.index(b"movi")  # the frames: one chunk tagged "00dc" each, then the index
    chunks = [i for i in range(movie, len(data) - 4) if data[i:i + 4] == b"00dc"]
    damaged = data[:chunks[4]] + bytes(8) + data[chunks[4] + 8:]  # frame 4's chunk header
    (tmp_path / "clip.avi").write_bytes(damaged)
    decoded, _, _ = decode(tmp_path / "clip.avi")
    assert len(decoded) == 7 and decoded[4][20, 68, 0] > 200  # OpenCV went on with frame 5 (red from x 48 to 72)
    out = tmp_path / "out"
    code = run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--videos",
                       str(tmp_path / "clip.avi"), "--out", str(out), "--device", "cpu")
    assert code == 1
    assert f"video {tmp_path / 'clip.avi'}: 7 of the 8 frames the file declares" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert len(records) == 7 == len(decode(out / "clip.mp4")[0])
    assert records[4]["names"][0] == "red" and records[4]["boxes"][0][0] == pytest.approx(48, abs=1)


def test_a_failure_midway_leaves_no_output_that_looks_complete(perfect, tmp_path, monkeypatch):
    checkpoint, config = perfect
    write_video(tmp_path / "clip.avi", moving_squares(6))
    detector = detkit.load(checkpoint, config=config, device="cpu")
    calls = []

    def predict_then_fail(images, **options):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return type(detector).predict(detector, images, **options)

    monkeypatch.setattr(detector, "predict", predict_then_fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_videos(detector, [str(tmp_path / "clip.avi")], str(tmp_path / "out"), batch_size=2, progress=False)
    assert calls == [2, 2] and os.listdir(tmp_path / "out") == []  # neither the video nor its lines, no temporaries
