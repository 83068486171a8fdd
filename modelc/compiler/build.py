"""AST -> IR: the network as a forward graph, with every check that needs shapes.

The same spec is built twice: once in inference mode (the `predict` and
`evaluate` graphs) and once in training mode (dropout active), from which
autodiff makes the `train` graph. Parameters are shared between the two.
"""
from __future__ import annotations

import hashlib
import math
import zlib

from modelc.compiler import limits, passes
from modelc.compiler.catalog import (LOSS_ALIASES, LOSSES, METRIC_ALIASES, METRICS, OPTIMIZERS,
                                     OPTION_ALIASES, SCHEDULES, schedule_tuple)
from modelc.compiler.emitter import Emitter
from modelc.compiler.ir import BATCH, F32, I64, Graph, Value, format_graph
from modelc.compiler.verify import verify
from modelc.compiler.layers import bind_layer
from modelc.compiler.program import LayerInfo, ParamInfo, Program, TargetInfo
from modelc.errors import SpecError, did_you_mean, unknown
from modelc.grammar import ast
from modelc.schema import bind_call


class _Context:
    """What a layer's build function sees: where to emit, how to make parameters."""

    def __init__(self, graph: Graph, emit: Emitter, params: dict, training: bool, step: Value | None):
        self.graph, self.emit, self.params = graph, emit, params
        self.training, self.step = training, step
        self.layer_params: list[Value] = []

    def param(self, layer, kind, shape, init, fan_in, fan_out, trainable=True) -> Value:
        """A weight of `layer`, made once and shared by the training and inference graphs;
        one not trained (a moving statistic) has the role "stat"."""
        key = f"{layer}.{kind}"
        if key not in self.params:
            self._check_size(layer, kind, tuple(shape))
            value = Value(key, F32, tuple(shape), "param" if trainable else "stat")
            self.params[key] = ParamInfo(value, layer, init, fan_in, fan_out)
        info = self.params[key]
        if info.value not in self.graph.params:
            self.graph.params.append(info.value)
        self.layer_params.append(info.value)
        return info.value

    def _check_size(self, layer: str, kind: str, shape: tuple):
        """A weight over `limits.MAX_ELEMENTS`, or one that takes the model over `MAX_PARAMS`:
        a SpecError at the layer's line saying how much memory it would need."""
        hint = "use fewer units or filters, or make the input smaller first (pooling, strides)"
        try:
            limits.check_elements(shape, f"{layer}: its {kind}", "weights")
        except limits.LimitError as err:
            raise SpecError(str(err), self.emit.loc, hint=hint) from None
        total = sum(math.prod(p.value.shape) for p in self.params.values()) + math.prod(shape)
        if total > limits.MAX_PARAMS:
            raise SpecError(f"{layer}: its {kind} of {limits.product(shape)} weights takes the model to "
                            f"{limits.count(total)} weights, {limits.memory(total)} as float32; the limit is "
                            f"{limits.MAX_PARAMS:,} weights in all", self.emit.loc, hint=hint)

    def dropout_seed(self, layer: str) -> int:
        return zlib.crc32(layer.encode())


def _sample_shape(decl: ast.InputDecl | ast.TargetDecl, what: str) -> tuple:
    """The declared per-sample shape, within `limits.MAX_ELEMENTS`."""
    try:
        limits.check_elements(decl.type.shape, f"the {what} '{decl.name.name}'", "values per sample")
    except limits.LimitError as err:
        raise SpecError(str(err), decl.type.pos, hint="declare a smaller shape") from None
    return decl.type.shape


def _declared_target(decl: ast.TargetDecl) -> TargetInfo:
    shape = _sample_shape(decl, "target")
    if decl.onehot:
        if decl.type.dtype != "f32" or len(shape) != 1:
            raise SpecError("a one-hot target must be a float vector, like f32[10] onehot", decl.type.pos)
        classes = shape[0]
        if decl.classes is not None and decl.classes.value != classes:
            raise SpecError(f"the one-hot vector has {classes} entries but 'classes' says {decl.classes.value}",
                            decl.classes.pos)
        return TargetInfo(Value(decl.name.name, F32, (BATCH, classes), "target"), "onehot", classes)
    if decl.type.dtype == "int":
        if shape:
            raise SpecError("integer class labels are one number per sample: write int[]", decl.type.pos,
                            hint="for one-hot vectors write f32[N] onehot")
        if decl.classes is None:
            raise SpecError("integer labels need the number of classes", decl.type.pos,
                            hint=f"write: target {decl.name.name}: int[] classes N")
        classes = decl.classes.value
        if not isinstance(classes, int) or classes < 2:
            raise SpecError("'classes' must be a whole number of at least 2", decl.classes.pos)
        return TargetInfo(Value(decl.name.name, I64, (BATCH,), "target"), "sparse", classes)
    if decl.classes is not None:
        raise SpecError("'classes' goes with integer labels (int[]) or onehot vectors", decl.classes.pos)
    if not shape:
        raise SpecError("a float target needs a shape, e.g. f32[1]", decl.type.pos)
    return TargetInfo(Value(decl.name.name, F32, (BATCH,) + shape, "target"), "dense", None)


class _Network:
    """Builds the network's chains into one graph, tracking value names and layers."""

    def __init__(self, spec: ast.Spec, params: dict, training: bool):
        self.spec = spec
        self.graph = Graph("train_forward" if training else "forward")
        self.emit = Emitter(self.graph)
        self.step = None
        if training:
            self.step = Value("step", I64, (), "scalar")
            self.emit.taken.add("step")
        self.ctx = _Context(self.graph, self.emit, params, training, self.step)
        self.env: dict[str, tuple[Value, ast.Pos]] = {}
        self.origin: dict[int, tuple[str, ast.Pos]] = {}     # value id -> (last layer kind, where)
        self.layers: list[LayerInfo] = []
        self.made_by: dict[int, str] = {}          # value id -> the layer (or input) that made it
        self.counts: dict[str, int] = {}
        for decl in spec.inputs:
            self._define(decl.name, Value(decl.name.name, F32, (BATCH,) + _sample_shape(decl, "input"), "input"))
            self.emit.taken.add(decl.name.name)
        for decl in spec.targets:
            self.emit.taken.add(decl.name.name)
        self.graph.inputs = [self.env[d.name.name][0] for d in spec.inputs]
        self.made_by.update({value.id: value.name for value in self.graph.inputs})

    def _define(self, ident: ast.Ident, value: Value):
        if ident.name in self.env:
            first = self.env[ident.name][1]
            raise SpecError(f"'{ident.name}' is already defined (line {first.line})", ident.pos,
                            hint="give this value another name")
        self.env[ident.name] = (value, ident.pos)

    def lookup(self, ident: ast.Ident) -> Value:
        if ident.name not in self.env:
            targets = {d.name.name for d in self.spec.targets}
            if ident.name in targets:
                raise SpecError(f"'{ident.name}' is a target; a network cannot read it", ident.pos,
                                hint="targets are used by the loss only")
            suggestion = did_you_mean(ident.name, self.env)
            raise SpecError(f"'{ident.name}' is not defined" + (f"; {suggestion}" if suggestion else ""),
                            ident.pos, hint=None if suggestion else
                            "values are defined by 'input' or by '=> name' at the end of a chain")
        return self.env[ident.name][0]

    def _layer_name(self, kind: str, links: list, index: int) -> str:
        following = links[index + 1] if index + 1 < len(links) else None
        if isinstance(following, ast.Bind):
            return following.name.name
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        name = kind if n == 0 else f"{kind}_{n}"
        while name in self.emit.taken or name in self.env:
            n += 1
            self.counts[kind] = n + 1
            name = f"{kind}_{n}"
        return name

    def chain(self, chain: ast.Chain):
        current = [self.lookup(s) for s in chain.sources]
        for i, link in enumerate(chain.links):
            if isinstance(link, ast.Bind):
                if len(current) != 1:
                    raise SpecError("only a single value can be named; merge the tuple first "
                                    "with add or concat", link.pos)
                self._define(link.name, current[0])
                continue
            definition, options = bind_layer(link)
            kind = definition.name
            if definition.merge and len(current) < 2:
                raise SpecError(f"{kind} joins two or more values; give it a tuple like (a, b)", link.pos,
                                hint=f"write (a, b) -> {kind}")
            if not definition.merge and len(current) != 1:
                raise SpecError(f"{kind} takes one input but gets {len(current)}", link.pos,
                                hint="join the values first with add or concat")
            layer = self._layer_name(kind, chain.links, i)
            self.emit.loc = link.pos
            self.ctx.layer_params = []
            out = definition.build(self.ctx, current, options, layer)
            if definition.keeps_kind:
                last_kind = self.origin.get(current[0].id, ("linear", link.pos))[0]
            elif definition.activation is not None:
                last_kind = options[definition.activation][0]
            else:
                last_kind = "linear"
            self.origin[out.id] = (last_kind, link.pos)
            inputs = [self.made_by.get(value.id, value.name) for value in current]
            self.layers.append(LayerInfo(layer, kind, out, list(self.ctx.layer_params), link.pos, inputs))
            self.made_by[out.id] = layer
            current = [out]
        return current

    def build(self):
        last = None
        for chain in self.spec.network:
            last = self.chain(chain)
        return last


def _resolve_loss(spec: ast.Spec):
    call = spec.loss
    name = LOSS_ALIASES.get(call.name.name, call.name.name)
    if name not in LOSSES:
        raise unknown("loss", call.name.name, list(LOSSES) + list(LOSS_ALIASES), call.name.pos)
    definition = LOSSES[name]
    positional = call.positional
    if len(positional) != 2 or not all(isinstance(a.value, ast.Ident) for a in positional):
        raise SpecError(f"{name} takes the target and the prediction by name, like {name}(label, probs)",
                        call.pos)
    options_call = ast.Call(call.name, call.keywords, call.pos)
    options = bind_call(options_call, definition.params, what=name)
    return definition, positional[0].value, positional[1].value, options


def _check_loss(definition, target: TargetInfo, target_ident, output: Value, origin, options, spec):
    """The mistakes Keras reports deep in a stack trace, caught against the declared target."""
    name = definition.name
    kind, where = origin
    line = f" (line {where.line})"
    pos = spec.loss.pos
    units = output.shape[-1] if output.rank >= 2 else 1
    decl = f"'{target_ident.name}'"
    if definition.kind == "categorical" and target.format == "sparse":
        raise SpecError(f"{name} expects one-hot targets, but {decl} is declared as integer class labels",
                        pos, hint=f"use sparse_categorical_crossentropy, or declare the target one-hot: "
                        f"target {target_ident.name}: f32[{target.classes}] onehot")
    if definition.kind == "sparse" and target.format != "sparse":
        raise SpecError(f"{name} expects integer class labels, but {decl} is declared as "
                        f"{'one-hot vectors' if target.format == 'onehot' else 'float values'} "
                        f"of shape {list(target.value.shape[1:])}", pos,
                        hint=f"use categorical_crossentropy, or declare the target as integer labels: "
                        f"target {target_ident.name}: int[] classes {units}")
    if definition.kind in ("categorical", "sparse"):
        if target.classes is not None and units != target.classes:
            raise SpecError(f"the output '{output.name}' has {units} units but {decl} has {target.classes} classes",
                            pos, hint=f"make the last layer dense({target.classes}, softmax)")
        if kind == "sigmoid" and units > 1:
            raise SpecError(f"{name} over {units} classes needs a softmax output, but '{output.name}' "
                            f"ends in sigmoid{line}", pos,
                            hint="use softmax in the last layer, or binary_crossentropy for independent labels")
    if definition.kind == "binary" and target.format == "sparse" and target.classes != 2:
        raise SpecError(f"binary_crossentropy needs 0/1 targets, but {decl} has {target.classes} classes", pos,
                        hint="use sparse_categorical_crossentropy with a softmax output")
    if "from_logits" in options:
        if options["from_logits"] and kind in ("softmax", "sigmoid"):
            raise SpecError(f"from_logits=true, but '{output.name}' is already a {kind} output{line}", pos,
                            hint=f"remove from_logits=true, or drop the {kind} from the last layer")
        if not options["from_logits"] and kind not in ("softmax", "sigmoid") and definition.kind != "distribution":
            expected = "sigmoid" if definition.kind == "binary" else "softmax"
            raise SpecError(f"{name} expects probabilities, but '{output.name}' is a {kind} output{line}",
                            pos, hint=f"end the network in {expected}, or pass from_logits=true")
    if target.format == "dense" and target.value.shape != output.shape:
        raise SpecError(f"the target {decl} has shape {list(target.value.shape[1:])} but the output "
                        f"'{output.name}' has shape {list(output.shape[1:])}", pos)
    if target.format == "onehot" and target.value.shape != output.shape:
        raise SpecError(f"the target {decl} has {target.classes} classes but the output '{output.name}' "
                        f"has shape {list(output.shape[1:])}", pos,
                        hint=f"make the last layer dense({target.classes}, softmax)")


def _loss_ops(emit: Emitter, definition, options, target: TargetInfo, output: Value):
    attrs = dict(options)
    return emit("mean", emit(definition.name, target.value, output, name="loss.sample", **attrs), name="loss")


def _metric(call: ast.Call, target: TargetInfo, loss_kind: str):
    """The metric a `metrics` entry names (accuracy resolved by the target's format), and its options."""
    name = METRIC_ALIASES.get(call.name.name, call.name.name)
    if name not in METRICS:
        raise unknown("metric", call.name.name, list(METRICS) + list(METRIC_ALIASES), call.name.pos)
    definition = METRICS[name]
    if call.positional:
        raise SpecError(f"{name} reads the loss's target and prediction; give options by name, like "
                        f"{name}(k=3)", call.positional[0].pos)
    if definition.by_format:
        fmt = "binary" if target.format == "dense" and loss_kind == "binary" else target.format
        chosen = dict(definition.by_format).get(fmt)
        if chosen is None:
            raise SpecError(f"{name} needs class labels, but the target holds real values", call.pos,
                            hint="use mae or mse for regression")
        definition = METRICS[chosen]
    if target.format not in definition.targets:
        wants = {"sparse": "integer class labels", "onehot": "one-hot targets", "dense": "0/1 or real targets"}
        raise SpecError(f"{name} needs {' or '.join(wants[t] for t in definition.targets)}, but the target "
                        f"holds {wants[target.format]}", call.pos,
                        hint="use accuracy" if target.format == "sparse" else None)
    return name, definition, bind_call(call, definition.params, what=name)


def _metric_ops(spec: ast.Spec, emit: Emitter, target: TargetInfo, output: Value, loss_kind: str):
    """The per-batch mean of each metric (for a ratio metric, of its numerator and denominator);
    returns the metric names, the graph outputs to sum, and the ratios among them."""
    names, outputs, ratios = [], {}, {}
    for call in spec.metrics:
        name, definition, options = _metric(call, target, loss_kind)
        if name in names:
            raise SpecError(f"metric '{call.name.name}' is listed twice", call.pos)
        emit.loc = call.pos
        if definition.ratio is not None:
            parts = []
            for rule in definition.ratio:
                key = f"{name}.{rule.name}"
                outputs[key] = emit("mean", emit(rule.name, target.value, output, name=f"{key}.sample", **options),
                                    name=key)
                parts.append(key)
            ratios[name] = tuple(parts)
        else:
            prim = definition.loss or definition.rule.name
            if definition.loss:
                options = bind_call(ast.Call(ast.Ident(prim), []), LOSSES[prim].params, what=prim)
            per_sample = emit(prim, target.value, output, name=f"{name}.sample", **options)
            outputs[name] = emit("mean", per_sample, name=name)
        names.append(name)
    return names, outputs, ratios


def _optimizer(spec: ast.Spec):
    call = spec.optimizer
    if call is None:
        return "adam", OPTIMIZERS["adam"], bind_call(ast.Call(ast.Ident("adam"), []), OPTIMIZERS["adam"].params)
    if call.name.name not in OPTIMIZERS:
        raise unknown("optimizer", call.name.name, OPTIMIZERS, call.name.pos)
    definition = OPTIMIZERS[call.name.name]
    for arg in call.keywords:
        if arg.key.name in OPTION_ALIASES:
            arg.key = ast.Ident(OPTION_ALIASES[arg.key.name], arg.key.pos)
    return call.name.name, definition, bind_call(call, definition.params, what=call.name.name)


def _schedule(spec: ast.Spec) -> tuple:
    for setting in spec.train:
        if setting.key.name == "schedule":
            value = setting.value
            call = value if isinstance(value, ast.Call) else (
                ast.Call(value, [], value.pos) if isinstance(value, ast.Ident) else None)
            if call is None:
                raise SpecError("schedule must be a schedule such as exponential_decay(rate=0.96, steps=1000)",
                                setting.value.pos if hasattr(setting.value, "pos") else setting.pos)
            if call.name.name not in SCHEDULES:
                raise unknown("schedule", call.name.name, SCHEDULES, call.name.pos)
            return schedule_tuple(call.name.name, bind_call(call, SCHEDULES[call.name.name]))
    return ("constant",)


def build_program(spec: ast.Spec) -> Program:
    """Check the spec against shapes and build all graphs. Raises located SpecErrors."""
    try:
        return _build(spec)
    except SpecError as err:
        raise err.located(spec.source)


def _build(spec: ast.Spec) -> Program:
    if len(spec.inputs) != 1:
        raise SpecError("modelc trains networks with exactly one input for now", spec.inputs[1].pos
                        if len(spec.inputs) > 1 else spec.pos,
                        hint="concatenate the features into one input")
    if len(spec.targets) > 1:
        raise SpecError("modelc trains networks with one target for now", spec.targets[1].pos)
    for decl in spec.inputs:
        if decl.type.dtype != "f32":
            raise SpecError("inputs are float tensors: write f32[...]", decl.type.pos)
        if not decl.type.shape:
            raise SpecError("an input needs a shape, e.g. f32[10]", decl.type.pos)
    target_decl = spec.targets[0] if spec.targets else None
    target = _declared_target(target_decl) if target_decl else None
    names = {d.name.name: d.name.pos for d in spec.inputs}
    if target_decl and target_decl.name.name in names:
        raise SpecError(f"'{target_decl.name.name}' is already an input (line {names[target_decl.name.name].line})",
                        target_decl.name.pos)

    params: dict[str, ParamInfo] = {}
    net = _Network(spec, params, training=False)
    last = net.build()
    if spec.loss is not None:
        if target is None:
            raise SpecError("the loss needs a target; declare one", spec.loss.pos,
                            hint="for example: target label: int[] classes 10")
        definition, target_ident, output_ident, options = _resolve_loss(spec)
        if target_ident.name != target.value.name:
            if target_ident.name in net.env:
                raise SpecError(f"the loss takes the target first: {definition.name}({target.value.name}, "
                                f"{target_ident.name})", target_ident.pos)
            raise SpecError(f"'{target_ident.name}' is not a declared target; did you mean "
                            f"'{target.value.name}'?", target_ident.pos)
        output = net.lookup(output_ident)
    else:
        definition = options = None
        output = last[0] if last and len(last) == 1 else None
        if output is None:
            raise SpecError("the network's last chain must end in a single value", spec.network[-1].pos)
    origin = net.origin.get(output.id, ("linear", spec.pos))

    predict = net.graph
    predict.name = "predict"
    predict.outputs = {"prediction": output}
    predict = passes.dead_code(predict)
    verify(predict)

    evaluate = train = None
    metric_names: list[str] = []
    metric_outputs: dict = {}
    ratios: dict = {}
    state: list[Value] = []
    optimizer_name = None
    optimizer_options: dict = {}
    if definition is not None:
        _check_loss(definition, target, target_ident, output, origin, options, spec)
        evaluate = Graph("evaluate", list(predict.inputs) + [target.value], list(predict.params), [],
                         list(predict.ops))
        emit = Emitter(evaluate)
        emit.loc = spec.loss.pos
        loss = _loss_ops(emit, definition, options, target, output)
        metric_names, metric_outputs, ratios = _metric_ops(spec, emit, target, output, definition.kind)
        evaluate.outputs = {"loss": loss, **metric_outputs}
        evaluate = passes.fuse_softmax_cross_entropy(evaluate)
        verify(evaluate)

        training = _Network(spec, params, training=True)
        training.build()
        tgraph = training.graph
        tgraph.inputs = list(tgraph.inputs) + [target.value, training.step]
        t_output = training.env[output_ident.name][0]
        emit = Emitter(tgraph, training.emit.taken)
        emit.loc = spec.loss.pos
        t_loss = _loss_ops(emit, definition, options, target, t_output)
        _, t_metrics, _ = _metric_ops(spec, emit, target, t_output, definition.kind)
        tgraph.outputs = {"loss": t_loss, **t_metrics}
        tgraph = passes.fuse_softmax_cross_entropy(tgraph)
        optimizer_name, opt_def, optimizer_options = _optimizer(spec)
        optimizer_options = dict(optimizer_options, schedule=_schedule(spec))
        from modelc.compiler.autodiff import training_graph
        train = training_graph(tgraph, t_loss, opt_def.rule, optimizer_options)
        train = passes.dead_code(train)
        verify(train)
        state = list(train.state)

    ordered = [p for p in params.values()]
    # Source lines are left out, so a comment added to the spec keeps its checkpoints valid.
    arch = format_graph(predict, locations=False)
    arch += "".join(f"{p.value.name}{p.value.shape}" for p in ordered)
    return Program(
        name=spec.name.name, spec=spec, spec_hash=hashlib.sha256(arch.encode()).hexdigest()[:16],
        input=predict.inputs[0], target=target, output=output, params=ordered, layers=net.layers,
        predict=predict, evaluate=evaluate, train=train, metric_names=metric_names,
        result_names=["loss", *metric_outputs] if definition else ["loss"], ratios=ratios,
        optimizer=optimizer_name, optimizer_options=optimizer_options, state=state,
        loss_name=definition.name if definition else None)
