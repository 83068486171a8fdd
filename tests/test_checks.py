"""Mistakes that parse but cannot work: each is caught by the compiler before any
data is read, at the line and column that caused it, with a message that says
what to do. (Syntax mistakes are in test_parser.py.)"""
from __future__ import annotations

import pytest

from modelc.compiler.build import build_program
from modelc.errors import SpecError
from modelc.grammar.parser import parse

BASE = """model m
input image: f32[28, 28]
target digit: int[] classes 10
network {
    image -> flatten
          -> dense(64, relu)
          -> dense(10, softmax) => probs
}
loss sparse_categorical_crossentropy(digit, probs)
optimizer adam(lr=0.001)
metrics accuracy
"""


def build(text):
    return build_program(parse(text, "m.model"))


def check(text, line, column, *fragments):
    with pytest.raises(SpecError) as info:
        build(text)
    err = info.value
    rendered = str(err)
    assert (err.line, err.column) == (line, column), rendered
    for fragment in fragments:
        assert fragment in rendered, rendered
    assert "Traceback" not in rendered and "__ANON" not in rendered
    assert f"m.model:{line}:{column}:" in rendered
    return rendered


def test_base_builds():
    program = build(BASE)
    assert sum(p.value.sample_size() for p in program.params) == 784 * 64 + 64 + 64 * 10 + 10


CASES = [
    ("typo in an activation", BASE.replace("dense(64, relu)", "dense(64, rleu)"), 6, 24,
     ["unknown activation 'rleu'", "did you mean 'relu'"]),
    ("typo in a layer", BASE.replace("-> flatten", "-> flaten"), 5, 14, ["unknown layer 'flaten'", "'flatten'"]),
    ("typo in a loss", BASE.replace("loss sparse_categorical_crossentropy", "loss sparse_categorical_crossentropi"),
     9, 6, ["unknown loss", "did you mean 'sparse_categorical_crossentropy'"]),
    ("typo in an optimizer", BASE.replace("adam(lr", "adma(lr"), 10, 11, ["unknown optimizer 'adma'", "'adam'"]),
    ("typo in an option", BASE.replace("adam(lr=0.001)", "adam(lrate=0.001)"), 10, 16,
     ["adam has no option 'lrate'"]),
    ("typo in a metric", BASE.replace("metrics accuracy", "metrics acuracy"), 11, 9,
     ["unknown metric 'acuracy'", "'accuracy'"]),
    ("typo in an initializer", BASE.replace("dense(64, relu)", "dense(64, relu, init=he_normall)"), 6, 35,
     ["unknown initializer 'he_normall'", "'he_normal'"]),
    ("zero units", BASE.replace("dense(64, relu)", "dense(0, relu)"), 6, 20, ["'units' must be a whole number >= 1"]),
    ("fractional units", BASE.replace("dense(64, relu)", "dense(6.5, relu)"), 6, 20, ["'units' must be a whole number"]),
    ("non-positive learning rate", BASE.replace("adam(lr=0.001)", "adam(lr=0)"), 10, 19, ["'lr' must be a number > 0"]),
    ("dropout rate of one", BASE.replace("-> dense(64, relu)", "-> dense(64, relu) -> dropout(1.0)"), 6, 41,
     ["'rate' must be a number >= 0 and < 1"]),
    ("integer labels with categorical cross-entropy",
     BASE.replace("loss sparse_categorical_crossentropy", "loss categorical_crossentropy"), 9, 6,
     ["expects one-hot targets", "use sparse_categorical_crossentropy, or declare the target one-hot"]),
    ("one-hot labels with the sparse loss",
     BASE.replace("target digit: int[] classes 10", "target digit: f32[10] onehot"), 9, 6,
     ["expects integer class labels", "use categorical_crossentropy"]),
    ("from_logits after a softmax",
     BASE.replace("(digit, probs)", "(digit, probs, from_logits=true)"), 9, 6,
     ["from_logits=true, but 'probs' is already a softmax output (line 7)", "remove from_logits=true"]),
    ("probabilities expected from a linear output",
     BASE.replace("dense(10, softmax)", "dense(10)"), 9, 6,
     ["expects probabilities", "pass from_logits=true"]),
    ("sigmoid output with a categorical loss",
     BASE.replace("dense(10, softmax)", "dense(10, sigmoid)"), 9, 6,
     ["needs a softmax output", "ends in sigmoid (line 7)"]),
    ("softmax over one unit", BASE.replace("dense(10, softmax)", "dense(1, softmax)"), 7, 14,
     ["softmax over a single unit", "use sigmoid"]),
    ("output units differ from the classes", BASE.replace("dense(10, softmax)", "dense(8, softmax)"), 9, 6,
     ["has 8 units but 'digit' has 10 classes", "dense(10, softmax)"]),
    ("dense before flatten", BASE.replace("image -> flatten\n          -> dense(64, relu)", "image -> dense(64, relu)"),
     5, 14, ["dense needs one feature axis", "add '-> flatten' before it"]),
    ("undefined value", BASE.replace("(digit, probs)", "(digit, prob)"), 9, 45, ["'prob' is not defined", "'probs'"]),
    ("loss arguments swapped", BASE.replace("(digit, probs)", "(probs, digit)"), 9, 38,
     ["takes the target first"]),
    ("a network reading its target", BASE.replace("image -> flatten", "digit -> flatten"), 5, 5,
     ["'digit' is a target"]),
    ("a name used twice", BASE.replace("=> probs", "=> image"), 7, 36, ["'image' is already defined"]),
    ("a merge with one input", BASE.replace("-> dense(64, relu)\n", "-> dense(64, relu) -> add\n"), 6, 33,
     ["add joins two or more values"]),
    ("mismatched add", BASE.replace("=> probs\n", "=> probs\n    (image, probs) -> add => bad\n"), 8, 23,
     ["add needs inputs of one shape"]),
    ("accuracy on a regression target",
     BASE.replace("target digit: int[] classes 10", "target digit: f32[10]")
         .replace("loss sparse_categorical_crossentropy(digit, probs)", "loss mse(digit, probs)"), 11, 9,
     ["accuracy needs class labels"]),
    ("integer labels without classes", BASE.replace("int[] classes 10", "int[]"), 3, 15,
     ["integer labels need the number of classes"]),
    ("bad temperature", BASE.replace("dense(10, softmax)", "dense(10, softmax(temperature=0))"), 7, 44,
     ["'temperature' must be a number > 0"]),
    ("unknown schedule", BASE + "train {\n    schedule exponential(rate=0.9, steps=10)\n}\n", 13, 14,
     ["unknown schedule 'exponential'", "'exponential_decay'"]),
    ("concat over the batch axis",
     BASE.replace("=> probs\n", "=> probs\n    (probs, probs) -> concat(axis=0) => bad\n"), 8, 23,
     ["the batch axis cannot be joined"]),
    ("regression shapes differ",
     BASE.replace("target digit: int[] classes 10", "target digit: f32[3]")
         .replace("loss sparse_categorical_crossentropy(digit, probs)", "loss mse(digit, probs)")
         .replace("metrics accuracy", "metrics mae"), 9, 6, ["has shape [3] but the output 'probs' has shape [10]"]),
    ("a metric for another kind of target", BASE.replace("metrics accuracy", "metrics accuracy, precision"), 11, 19,
     ["precision needs 0/1 or real targets, but the target holds integer class labels"]),
    ("a metric option out of range", BASE.replace("metrics accuracy", "metrics top_k_categorical_accuracy(k=0)"),
     11, 38, ["'k' must be a whole number >= 1"]),
    ("a metric option it does not have", BASE.replace("metrics accuracy", "metrics accuracy(thresold=0.2)"),
     11, 18, ["no option 'thresold'"]),
    ("a metric given the target", BASE.replace("metrics accuracy", "metrics recall(digit)"), 11, 16,
     ["give options by name"]),
    ("clipping on an unknown optimizer option", BASE.replace("adam(lr=0.001)", "adam(clip_norm=1.0)"), 10, 16,
     ["adam has no option 'clip_norm'", "clipnorm"]),
]


@pytest.mark.parametrize("text,line,column,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_located_and_explained(text, line, column, fragments):
    check(text, line, column, *fragments)


def test_messages_show_the_line_and_a_caret():
    rendered = check(BASE.replace("dense(64, relu)", "dense(64, rleu)"), 6, 24, "rleu")
    lines = rendered.splitlines()
    assert lines[1].endswith("-> dense(64, rleu)")
    caret = lines[2]
    assert caret.index("^") == lines[1].index("rleu")
