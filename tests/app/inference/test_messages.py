"""Frames between the API and the inference process: whole messages, however the stream is cut."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from app.inference.messages import (
    HEADER,
    MAX_FRAME_BYTES,
    Done,
    Failed,
    FrameError,
    FrameReader,
    Predict,
    decode_body,
    encode,
    receive_frame,
    send_frame,
)


def test_frames_cut_at_every_byte_are_reassembled_in_order() -> None:
    first = Predict(handle=3, windows=np.arange(12, dtype=np.float64).reshape(1, 4, 3))
    second = Failed("no loaded version has handle 9", broken=False)
    stream = encode(7, first) + encode(8, second)
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        frames = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [call_id for call_id, _ in frames] == [7, 8]
        decoded = decode_body(frames[0][1])
        assert decoded.handle == 3 and np.array_equal(decoded.windows, first.windows)
        assert decode_body(frames[1][1]) == second


def test_a_length_beyond_the_limit_is_a_broken_stream() -> None:
    reader = FrameReader()
    with pytest.raises(FrameError, match="out of step"):
        reader.feed(HEADER.pack(MAX_FRAME_BYTES + 1, 1))


def test_a_message_that_cannot_be_pickled_fails_before_anything_is_sent() -> None:
    with pytest.raises(Exception, match="pickle"):
        encode(1, Done(lambda: None))


def test_a_frame_larger_than_the_socket_buffer_arrives_whole_through_blocking_sockets() -> None:
    # 4 MB: many times the socket buffer, so both sides loop.
    batch = np.random.default_rng(0).random((1024, 40, 12))
    writer, reader = socket.socketpair()
    with writer, reader:
        sender = threading.Thread(target=send_frame, args=(writer, 5, Predict(1, batch)))
        sender.start()
        call_id, body = receive_frame(reader)
        sender.join()
    assert call_id == 5
    assert np.array_equal(decode_body(body).windows, batch)
