"""Which bad files may be an image still being written (held for their writer) and which not."""

from __future__ import annotations

import pytest

from inboxsort.errors import BadImage
from inboxsort.imageio import IncompleteImage, decode_image
from tests.helpers.imagegen import HTML_BYTES, TEXT_BYTES, png_declaring, random_bytes


@pytest.fixture(scope="module")
def jpeg(dataset_root) -> bytes:
    return (dataset_root / "train" / "cats" / "cat.0.jpg").read_bytes()


@pytest.mark.parametrize("cut", [0, 2, 20, 400, 2000, -10])
def test_a_prefix_of_an_image_is_incomplete(jpeg, cut):
    with pytest.raises(IncompleteImage):
        decode_image(jpeg[:cut] if cut else b"", 32)


@pytest.mark.parametrize(
    "data",
    [TEXT_BYTES, HTML_BYTES, random_bytes(), png_declaring(20000, 20000)],
    ids=["text", "html", "noise", "bomb"],
)
def test_what_no_more_bytes_can_fix_is_final(data):
    with pytest.raises(BadImage) as caught:
        decode_image(data, 32)
    assert not isinstance(caught.value, IncompleteImage), caught.value
