"""Bad parameters of the catalog's layers (ArgMax, BatchReindex, Crop, Embed, Filter, Im2col, MVN,
Parameter, Reduction, SPP, Tile) in a prototxt: compiling stops with one line naming the file, the
layer's line and the layer, and saying what was expected and what was found."""

from __future__ import annotations

import pytest

from netspec.errors import NetspecError
from netspec.frontend import load_net
from netspec.graph import compile_net

HEAD = """name: "bad"
layer { name: "in" type: "Input" top: "x" top: "i" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }
"""


@pytest.mark.parametrize("layer, words", [
    ('type: "Crop" bottom: "x" bottom: "x" top: "y" crop_param { offset: 1 }',
     "crop of axis 2 to size 4 at offset 1 goes past bottom 'x' (2, 3, 4, 4)"),
    ('type: "Crop" bottom: "x" bottom: "x" top: "y" crop_param { offset: 0 offset: 0 offset: 0 }',
     "3 offsets for the 2 axes from axis 2; give 1 or 2"),
    ('type: "Crop" bottom: "x" bottom: "i" top: "y"',
     "bottom 'i' has shape (2,), bottom 'x' (2, 3, 4, 4): they need the same number of axes"),
    ('type: "Crop" bottom: "i" bottom: "i" top: "y"', "axis 2 is out of range for a 1-axis blob"),
    ('type: "Tile" bottom: "x" top: "y" tile_param { tiles: 0 }', "tile_param tiles must be given and positive, found 0"),
    ('type: "Embed" bottom: "i" top: "y" embed_param { num_output: 4 }', "embed_param input_dim must be given and positive"),
    ('type: "Embed" bottom: "i" top: "y" embed_param { input_dim: 4 }', "embed_param num_output must be given and positive"),
    ('type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 49 }',
     "top_k 49 is more than the 48 values of the flattened sample of bottom 'x' (2, 3, 4, 4)"),
    ('type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 0 }', "top_k must be at least 1, found 0"),
    ('type: "Filter" bottom: "x" bottom: "x" top: "y"', "selector 'x' has shape (2, 3, 4, 4); it must be (N,) or (N, 1, ...)"),
    ('type: "Filter" bottom: "x" bottom: "i" top: "y" top: "z"',
     "Filter makes one top per bottom but the selector: 2 bottoms need 1 tops, found 2"),
    ('type: "BatchReindex" bottom: "x" bottom: "x" top: "y"', "bottom 1 'x' has shape (2, 3, 4, 4); the indices must be a 1-axis blob"),
    ('type: "SPP" bottom: "x" top: "y"', "spp_param pyramid_height must be given and at least 1, found 0"),
    ('type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 4 }',
     "pyramid level 3 (8x8 bins) of a 4x4 bottom needs pad (2, 2) not smaller than kernel (1, 1)"),
    ('type: "Im2col" bottom: "x" top: "y"', "kernel_size (or kernel_h and kernel_w) is required"),
    ('type: "Im2col" bottom: "x" top: "y" convolution_param { kernel_size: 5 }', "smaller than kernel (5, 5)"),
    ('type: "Reduction" bottom: "x" top: "y" reduction_param { axis: -5 }', "axis -5 is out of range for a 4-axis blob"),
    ('type: "MVN" bottom: "x" top: "y" bottom: "i"', "MVN takes 1 bottom blob(s), found 2"),
    ('type: "Parameter" top: "y" parameter_param { shape { dim: 2 dim: -3 } }',
     "parameter_param shape [2, -3] has a negative dim"),
])
def test_bad_parameter_is_one_line_at_the_layer(tmp_path, layer, words):
    path = tmp_path / "bad.prototxt"
    path.write_text(HEAD + f'layer {{ name: "odd"\n  {layer} }}\n')
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(path), device_map="cpu", source=str(path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:3: layer 'odd': "), msg
    assert words in msg, msg
