"""Running a batch-specialized Graph over any number of samples: the one place that pads and chunks.

Graphs are specialized to one batch size. A search whose batch changes every round (branch-and-bound)
would re-trace every round, so requests are padded to a power of two; a graph that cannot be specialized
to another batch size (an ONNX network that moves axis 0) runs at its own batch size, chunk by chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from opwise.tracing.graph import Graph


def padded_size(batch: int, max_batch: int) -> int:
    """The power of two at or above `batch`, at most `max_batch`.

    >>> padded_size(5, 1024), padded_size(3000, 1024), padded_size(1, 1024)
    (8, 1024, 1)
    """
    return min(1 << max(0, batch - 1).bit_length(), max_batch)


def padded_chunks(count: int, size: int) -> list[tuple[list[int], int]]:
    """`count` items in chunks of `size` positions, the last chunk padded by repeating its last item: per chunk,
    (the positions, how many of them are real). The padding rule of every batched run (`map_batches`, the
    domains of branch-and-bound).

    >>> padded_chunks(5, 2)
    [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]
    """
    return [([min(index, count - 1) for index in range(begin, begin + size)], min(size, count - begin))
            for begin in range(0, count, size)]


def _size_for(graph: "Graph", batch: int, max_batch: int) -> int:
    """The batch size to run `batch` samples at: a size the graph is already specialized to when one holds
    them at most 8× padded (specializing costs a trace, seconds; padding costs compute), else the padded size."""
    wanted = padded_size(batch, max_batch)
    ready = [size for size, specialized in graph._batches.items() if specialized.batch_size == size]
    fits = [size for size in ready + [graph.batch_size] if batch <= size <= min(8 * wanted, max_batch)]
    return min(fits) if fits else wanted


def positions_for(graph: "Graph", count: int, max_batch: int) -> int:
    """See `Graph.positions_for`."""
    size = _size_for(graph, count, max_batch)
    return -(-count // size) * size


def map_batches(graph: "Graph", run: Callable[..., Any], tensors: tuple, max_batch: int) -> Any:
    """See `Graph.map_batches`."""
    batch = next(t for t in tensors if t is not None).shape[0]
    specialized = graph.for_batch(_size_for(graph, batch, max_batch))
    size = specialized.batch_size
    results, result = [], None
    for positions, real in padded_chunks(batch, size):
        index = torch.tensor(positions)
        chunk = [None if t is None else t[index.to(t.device)] for t in tensors]
        result = run(specialized, *chunk)
        parts = result if isinstance(result, tuple) else (result,)
        results.append([None if part is None else part[:real] for part in parts])
    joined = tuple(None if column[0] is None else torch.cat(column) for column in zip(*results))
    if not isinstance(result, tuple):
        return joined[0]
    return type(result)(*joined) if hasattr(result, "_fields") else joined
