"""textloc: the line of a field or a layer in prototxt text, counted by hand below."""
from poseidon_cli.textloc import field_line, layer_line, where

TEXT = '''net_param {
  layer { type: "ReLU" }
}
type: "Adam"  # type: in a comment is not a field
stepvalue: 1 stepvalue: 2
stepvalue: 3
'''


def test_field_line_any_depth_and_top_level():
    assert field_line(TEXT, "type") == 2
    assert field_line(TEXT, "type", top_level=True) == 4
    assert field_line(TEXT, "layer") == 2
    assert field_line(TEXT, "layer", top_level=True) is None
    assert field_line(TEXT, "momentum") is None


def test_nth_occurrence_counts_several_on_one_line():
    assert [field_line(TEXT, "stepvalue", i) for i in range(4)] == [5, 5, 6, None]


def test_layer_line_and_where():
    text = 'layer {\n  name: "conv1"\n}\nlayer {\n  name: "conv10"\n}\n'
    assert layer_line(text, "conv1") == 2 and layer_line(text, "conv10") == 5
    assert layer_line(text, "conv") is None
    assert where("a.prototxt", 3) == "a.prototxt:3" and where("a.prototxt", None) == "a.prototxt"
