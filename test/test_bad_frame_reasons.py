"""The replay counts refused frames under the same reasons as the node: the decoder's BadImage.reason (what
offline/replay.py counts) equals ros/convert.bad_frame_reason (what the node counts) for every kind of bad frame."""

from __future__ import annotations

import pytest
from sensor_msgs.msg import CompressedImage, Image

from molmo2_ros.core.image_decode import BadImage, decode_compressed, decode_raw
from molmo2_ros.ros.convert import bad_frame_reason


def raw(**fields) -> Image:
    msg = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(72))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


BAD = [
    raw(encoding="32FC1"), raw(encoding="no_such_encoding"), raw(width=0, data=b""), raw(height=0),
    raw(step=10), raw(data=bytes(40)), raw(encoding="yuv422", width=5, step=10, data=bytes(40)),
    raw(encoding="mono16", step=11), raw(encoding="bayer_rggb16", step=12, data=bytes(30)),
    CompressedImage(format="jpeg", data=b""), CompressedImage(format="jpeg", data=b"\x00not an image" * 5),
    CompressedImage(format="16UC1; compressedDepth png", data=b"\x89PNG...."),
]


@pytest.mark.parametrize("msg", BAD, ids=lambda m: m.format if isinstance(m, CompressedImage) else m.encoding)
def test_decoder_reason_equals_the_nodes_counter(msg):
    with pytest.raises(BadImage) as refused:
        if isinstance(msg, CompressedImage):
            decode_compressed(msg.format, msg.data)
        else:
            decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian, msg.data)
    assert refused.value.reason == bad_frame_reason(msg)
