"""Marks on the forgery overlay: numbered boxes where the flagged areas are, copy-move arrows
and undetermined pairs, and a legend strip below the image that lists only the marks drawn."""

from __future__ import annotations

import numpy as np
import pytest

from medforensics.errors import InvalidArrayError
from medforensics.report.images import heat_colours
from medforensics.report.marks import (
    AREA_COLOUR,
    COPY_COLOUR,
    UNDETERMINED_COLOUR,
    CopyPair,
    annotate_regions,
    copy_pairs,
    legend_entries,
    region_label,
)

GREY = np.full((200, 300, 3), 100, np.uint8)


def _is(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(img == np.array(colour, np.uint8), axis=-1)


def test_box_drawn_at_scaled_position_with_legend_below() -> None:
    regions = [{"bbox": [200, 100, 300, 200], "cue": "noise"}]  # stored pixels; display at 0.5
    out = annotate_regions(GREY, regions, 0.5, heat=heat_colours)
    assert out.shape[1] == 300 and out.shape[0] > 200  # legend strip appended, width kept
    top = out[:200]
    box = _is(top, AREA_COLOUR)
    ys, xs = np.nonzero(box[60:, :])  # below the label plate
    assert xs.min() == 100 and xs.max() == 149  # x 200..300 stored -> 100..149 displayed
    assert ys.max() + 60 == 99
    assert not box[75, 125]  # an outline: the area itself is not painted over
    assert np.array_equal(top[150:, :50], GREY[150:, :50])  # away from the marks: untouched
    assert _is(out[200:], AREA_COLOUR).any()  # the legend shows the box symbol
    no_legend = annotate_regions(GREY, regions, 0.5, legend=False)
    assert no_legend.shape == GREY.shape


def test_copy_move_arrow_and_undetermined_pair() -> None:
    regions = [
        {"bbox": [200, 20, 240, 60], "cue": "copymove",
         "copy_of": {"partner_bbox": [20, 120, 60, 160], "role": "pasted copy"}},
        {"bbox": [20, 120, 60, 160], "cue": "copymove",
         "copy_of": {"partner_bbox": [200, 20, 240, 60], "role": "source"}},
    ]
    pairs = copy_pairs(regions)
    # the pair seen from both sides is drawn once, source first
    assert pairs == [CopyPair((20, 120, 60, 160), (200, 20, 240, 60), True)]
    out = annotate_regions(GREY, regions, 1.0, legend=False)
    arrow = _is(out, COPY_COLOUR)
    # on the line between the centres (39.5, 139.5) -> (219.5, 39.5): y = 89 at x = 130
    assert arrow[86:93, 130].any() and not arrow[100:, 130].any()
    undetermined = [{"bbox_a": [10, 10, 40, 40], "bbox_b": [200, 150, 230, 180],
                     "direction": "undetermined", "pasted_bbox": None, "source_bbox": None}]
    out2 = annotate_regions(GREY, [], 1.0, copy_moves=undetermined)
    assert _is(out2[:200], UNDETERMINED_COLOUR).any() and not _is(out2, COPY_COLOUR).any()
    assert copy_pairs([], undetermined) == [CopyPair((10, 10, 40, 40), (200, 150, 230, 180),
                                                     False)]


def test_legend_lists_only_what_is_drawn() -> None:
    assert legend_entries([], [], heat=False) == ["no flagged area"]
    lines = legend_entries([{"bbox": [0, 0, 4, 4]}],
                           [CopyPair((0, 0, 1, 1), (2, 2, 3, 3), True)])
    assert lines[0].startswith("forgery probability")
    assert any(line.startswith("flagged area") for line in lines)
    assert any(line.startswith("copy-move: arrow") for line in lines)
    assert not any("undetermined" in line for line in lines)
    assert region_label(2, {"cue": "seam"}) == "2 seam" and region_label(1, {}) == "1"


def test_bad_input() -> None:
    with pytest.raises(InvalidArrayError):
        annotate_regions(GREY[..., 0], [], 1.0)
    with pytest.raises(InvalidArrayError):
        annotate_regions(GREY, [], 0.0)
