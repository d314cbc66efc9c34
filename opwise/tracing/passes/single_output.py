"""Rewrite multi-output operators whose extra outputs are unused into their single-output form.

Export gives `getitem(_native_batch_norm_legit_no_training(...), 0)`, `getitem(native_layer_norm(...), 0)`
and `getitem(max_pool2d_with_indices(...), 0)`; rules and bound transfers are simpler on one output.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten


def _batch_norm_args(args):
    x, weight, bias, running_mean, running_var, momentum, eps = args
    return (x, weight, bias, running_mean, running_var, False, momentum, eps, False)


def _training_batch_norm_args(args):
    x, weight, bias, running_mean, running_var, _, momentum, eps = args
    return (x, weight, bias, running_mean, running_var, False, momentum, eps, False)


def _is_inference_batch_norm(node: fx.Node) -> bool:
    """make_fx gives `native_batch_norm(..., training=False, ...)` for eval-mode batch norm."""
    return node.target is not aten.native_batch_norm.default or node.args[5] is False


def _layer_norm_args(args):
    x, normalized_shape, weight, bias, eps = args
    return (x, normalized_shape, weight, bias, eps)


def _max_pool_args(args):
    return tuple(args)


_FOLDS = {
    aten._native_batch_norm_legit_no_training.default: (aten.batch_norm.default, _batch_norm_args),
    aten.native_batch_norm.default: (aten.batch_norm.default, _training_batch_norm_args),
    aten.native_layer_norm.default: (aten.layer_norm.default, _layer_norm_args),
    aten.max_pool2d_with_indices.default: (aten.max_pool2d.default, _max_pool_args),
    aten.max_pool1d_with_indices.default: (aten.max_pool1d.default, _max_pool_args),
    aten.max_pool3d_with_indices.default: (aten.max_pool3d.default, _max_pool_args),
}


def fold_single_output_ops(module: fx.GraphModule) -> fx.GraphModule:
    """Fold where only output 0 is used (after dropping unused `getitem`s).

    >>> import torch, opwise
    >>> model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.LayerNorm(3)).eval()
    >>> for strategy in ("export", "fx"):
    ...     graph = opwise.trace(model, torch.randn(2, 3), strategy=strategy)
    ...     print([graph.info(n).op for n in graph.call_nodes()])
    ['aten.batch_norm.default', 'aten.layer_norm.default']
    ['aten.batch_norm.default', 'aten.layer_norm.default']
    """
    graph = module.graph
    graph.eliminate_dead_code()
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _FOLDS or not _is_inference_batch_norm(node):
            continue
        users = list(node.users)
        if not users or any(u.target is not operator.getitem or u.args[1] != 0 for u in users):
            continue
        single, convert = _FOLDS[node.target]
        with graph.inserting_before(node):
            new = graph.call_function(single, convert(node.args), dict(node.kwargs))
        new.meta = dict(users[0].meta)
        new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
        for user in users:
            user.replace_all_uses_with(new)
            graph.erase_node(user)
        graph.erase_node(node)
    module.recompile()
    return module
